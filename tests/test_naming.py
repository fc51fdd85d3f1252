from __future__ import annotations

import re

import pytest

from nightshift.naming import MODEL_NAME_PATTERN, artifact_key, slug


@pytest.mark.parametrize("name", ["churn", "Churn_Model.v2", "a" * 100, "x-y_z.1"])
def test_artifact_keys_are_prefect_safe(name: str) -> None:
    assert re.fullmatch(MODEL_NAME_PATTERN, name)
    key = artifact_key("drift-report", name)
    assert re.fullmatch(r"[a-z0-9-]+", key) and len(key) <= 64 and key.startswith("drift-report-")


def test_slug() -> None:
    assert slug("Churn_Model.v2") == "churn-model-v2" and slug("___") == "x"
