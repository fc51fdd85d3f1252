"""Small catalogues for tests: the two demo streams under fresh names, fast estimators and a cheap gate."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml

SMALL = {"gate": {"resamples": 200, "absolute_floor": 0.55}, "cv_folds": 2, "window_days": 2}


def two_demo_models(prefix: str) -> list[dict[str, Any]]:
    """Churn (labels land 2 days late, joined by customer_id) and fraud (labels inline, several files a night)."""
    tag = f"{prefix}{uuid.uuid4().hex[:6]}"
    return [
        {"name": f"churn-{tag}", "features": "{state_dir}/churn/{date:%Y-%m-%d}.parquet", "label": "churned",
         "labels": {"source": "{state_dir}/churn-labels/{date:%Y-%m-%d}.parquet", "key": "customer_id",
                    "lag_days": 2}, "id_columns": ["customer_id"], "time_column": "event_date",
         "estimator": {"kind": "random_forest", "param_grid": {"n_estimators": [20]}}, **SMALL},
        {"name": f"fraud-{tag}", "features": "{state_dir}/fraud/{date:%Y%m%d}/*.parquet", "label": "is_fraud",
         "id_columns": ["transaction_id"], "time_column": "event_time",
         "estimator": {"kind": "hist_gradient_boosting", "param_grid": {"max_iter": [40]}}, **SMALL},
    ]


def write_catalogue(folder: Path, models: list[dict[str, Any]]) -> Path:
    """models.yaml in `folder`."""
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump({"models": models}))
    return path
