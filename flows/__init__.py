"""Prefect flows, one per file: each reads top to bottom like the story it runs."""
