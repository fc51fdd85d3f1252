"""Names shared by the flows: what a model name may be, and Prefect-safe artifact keys."""

from __future__ import annotations

import re

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"


def slug(text: str, limit: int = 50) -> str:
    """Lowercase letters, digits and dashes only (Prefect artifact keys, report folder names)."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:limit] or "x"


def artifact_key(prefix: str, model_name: str) -> str:
    """A Prefect artifact key for one model, e.g. ('gate', 'churn_v2') -> 'gate-churn-v2'."""
    return f"{prefix}-{slug(model_name)}"[:64]
