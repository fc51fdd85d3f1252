"""`python -m cli.audit`: print the promotion/refusal/rollback trail (also in the MLflow UI, '<experiment>-audit')."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Print the audit trail as a table, oldest first."""
    parser = argparse.ArgumentParser(prog="python -m cli.audit", description=__doc__)
    parser.add_argument("--model-name", help="only this registered model")
    parser.add_argument("--json", action="store_true", help="one JSON record per line")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    from nightshift.settings import get_settings
    from tasks.registry.audit import read_audit
    from tasks.registry.store import TrackingConfig

    records = read_audit(TrackingConfig.from_settings(get_settings()), args.model_name)
    if args.json:
        for record in records:
            print(record.model_dump_json(exclude_none=True))
        return 0
    table = Table(title=f"nightshift audit trail ({len(records)} records)")
    for column in ("time", "model", "action", "from", "to", "challenger", "champion", "CI", "by", "reason"):
        table.add_column(column)
    for r in records:
        ci = f"{r.ci_low:+.4f}..{r.ci_high:+.4f}" if r.ci_low is not None and r.ci_high is not None else ""
        table.add_row(r.time, r.model_name, r.action, r.from_version or "-", r.to_version or "-",
                      "" if r.challenger is None else f"{r.challenger:.4f}",
                      "" if r.champion is None else f"{r.champion:.4f}", ci, r.by or "", r.reason)
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
