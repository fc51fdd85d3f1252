"""Reusable Prefect task wrappers over plain, typed functions, one module per concern."""
