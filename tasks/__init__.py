"""Reusable Prefect task wrappers over plain, typed functions, one module per concern."""

from nightshift.settings import apply_prefect_defaults

apply_prefect_defaults()
