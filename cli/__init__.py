"""Command-line programs: the demo week (`python -m cli.demo`) and the audit-trail reader (`python -m cli.audit`)."""
