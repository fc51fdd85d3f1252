"""A regressor served: /predict and /invocations answer numbers, /version says the task, capture keeps them."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_a_regressor_answers_numbers_and_they_are_captured(tracking, tmp_path: Path) -> None:
    from sklearn.datasets import load_diabetes

    from flows.train import EstimatorParams, TrainParams, train
    from nightshift.settings import Settings
    from serving.server import create_app
    from tasks.data.datasets import DatasetParams
    from tasks.registry.versions import move_champion

    frame = load_diabetes(as_frame=True).frame
    path = tmp_path / "diabetes.parquet"
    frame.to_parquet(path)
    name = f"reg-{uuid.uuid4().hex[:8]}"
    result = train(TrainParams(dataset=DatasetParams(source=str(path), label="target"), model_name=name,
                               task="regression", cv_folds=2, estimator=EstimatorParams(kind="ridge", param_grid={})))
    move_champion(tracking, name, result.model_version)

    rows = frame.drop(columns="target").head(3)
    settings = Settings(model_name=name, catalogue_path=tmp_path / "none.yaml", server_prompts=[],
                        capture_dir=tmp_path / "served", capture_flush_seconds=0.05)
    with TestClient(create_app(settings)) as client:
        version = client.get("/version").json()
        predicted = client.post("/predict", json={"rows": rows.to_dict(orient="records")})
        invoked = client.post("/invocations", json={"dataframe_split": {"columns": list(rows.columns),
                                                                       "data": rows.to_numpy().tolist()}})
    assert version["task"] == "regression" and version["classes"] == []
    assert predicted.status_code == 200, predicted.text
    values = [p["value"] for p in predicted.json()["predictions"]]
    assert len(values) == 3 and all(isinstance(v, float) and 25 < v < 346 for v in values)
    body = invoked.json()
    assert invoked.status_code == 200 and body["predictions"] == pytest.approx(values)
    assert "probabilities" not in body and "classes" not in body
    captured = pd.concat(pd.read_parquet(p) for p in (tmp_path / "served").rglob("*.parquet"))
    assert len(captured) == 6 and captured["prediction"].dtype == "float64"
    assert sorted(captured["prediction"].round(6)) == pytest.approx(sorted(values * 2), abs=1e-5)
