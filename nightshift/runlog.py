"""The logger a plain function should use: Prefect's run logger inside a flow or task run, else a module logger."""

from __future__ import annotations

import logging


def run_logger(name: str) -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger when called inside a run (its lines reach the UI), else the logger called `name`."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(name)
