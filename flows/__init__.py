"""Prefect flows, one per file: each reads top to bottom like the story it runs."""

from nightshift.settings import apply_prefect_defaults

apply_prefect_defaults()
