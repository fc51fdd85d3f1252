"""Batch scoring: chunked, validated, identical to the registry model, nothing partial left behind."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.batch_predict import BatchPredictParams, batch_predict
from flows.train import EstimatorParams, TrainParams, train
from tasks.data.datasets import DatasetParams
from tasks.data.demo import generate_demo
from tasks.registry.versions import load_sklearn, move_champion

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.integration]


@pytest.fixture(scope="module")
def champion(prefect_harness, tracking) -> str:
    name = f"batch-{uuid.uuid4().hex[:8]}"
    result = train(TrainParams(dataset=DatasetParams(source="demo", rows=2_000), model_name=name, cv_folds=2,
                               estimator=EstimatorParams(param_grid={"n_estimators": [20]})))
    move_champion(tracking, name, result.model_version)
    return name


def test_scores_in_chunks_like_the_registry_model(champion, tracking, tmp_path: Path) -> None:
    frame = generate_demo(5_500, seed=8, day=3)
    frame["churned"] = frame["churned"].astype(object)
    frame.loc[4_321, "churned"] = None  # one blank label cell: the chunk reads 0.0/1.0; scoring ignores labels
    source = tmp_path / "day3.csv"
    frame.to_csv(source, index=False)
    summary = batch_predict(BatchPredictParams(source=str(source), model_name=champion, chunk_rows=1_000,
                                               keep_columns=["event_date"]))
    assert (summary.rows, summary.chunks) == (5_500, 6)
    assert summary.output == str(tmp_path / "day3.predictions.parquet")
    out = pd.read_parquet(summary.output)
    model = load_sklearn(tracking, champion, alias="champion")
    expected = model.predict_proba(frame[list(model.feature_names_in_)])
    np.testing.assert_allclose(out[["proba_0", "proba_1"]].to_numpy(), expected)
    assert list(out.columns) == ["event_date", "prediction", "proba_0", "proba_1"]
    assert sum(summary.class_counts.values()) == 5_500 == sum(summary.histogram_counts)


def test_a_bad_chunk_fails_the_run_and_leaves_no_output(champion, tmp_path: Path) -> None:
    frame = generate_demo(3_000, seed=9)
    frame["age"] = frame["age"].astype(object)
    frame.loc[2_500, "age"] = "unknown"  # in the third chunk
    source = tmp_path / "bad.csv"
    frame.to_csv(source, index=False)
    state = batch_predict(BatchPredictParams(source=str(source), model_name=champion, chunk_rows=1_000),
                          return_state=True)
    assert state.is_failed() and "column 'age' should be numeric" in state.message and "rows 2000..2999" in state.message
    assert not list(tmp_path.glob("*.predictions.parquet*"))


def test_no_champion(tmp_path: Path) -> None:
    state = batch_predict(BatchPredictParams(source=str(tmp_path / "x.parquet"), model_name="nobody"),
                          return_state=True)
    assert state.is_failed() and "has no champion yet" in state.message


@pytest.mark.parametrize("bad_part", [False, True], ids=["parts-joined", "bad-part-leaves-nothing"])
def test_dask_scores_parquet_row_groups_in_parallel_parts(champion, tracking, tmp_path: Path, monkeypatch,
                                                          bad_part: bool) -> None:
    """NIGHTSHIFT_TASK_RUNNER=dask: row groups scored as parallel parts on a local Dask cluster, joined in order."""
    from prefect_dask import DaskTaskRunner

    frame = generate_demo(6_000, seed=8, day=3)
    if bad_part:
        frame.loc[4_500:4_999, "monthly_spend"] = 1e9  # a broken feed in the third part
    source = tmp_path / "day3.parquet"
    frame.to_parquet(source, index=False, row_group_size=1_000)
    monkeypatch.setenv("NIGHTSHIFT_TASK_RUNNER", "dask")
    runner = DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": True,
                                            "dashboard_address": None, "host": "127.0.0.1"})
    flow = batch_predict.with_options(task_runner=runner)
    params = BatchPredictParams(source=str(source), model_name=champion, chunk_rows=2_000, keep_columns=["event_date"])
    if bad_part:
        state = flow(params, return_state=True)
        assert state.is_failed() and "rows 4000..5999" in state.message, state.message
        assert not [p.name for p in tmp_path.iterdir() if "predictions" in p.name]
        return
    summary = flow(params)
    assert (summary.rows, summary.chunks) == (6_000, 3)
    out = pd.read_parquet(summary.output)
    model = load_sklearn(tracking, champion, alias="champion")
    np.testing.assert_allclose(out[["proba_0", "proba_1"]].to_numpy(),
                               model.predict_proba(frame[list(model.feature_names_in_)]))
    assert (out["event_date"].to_numpy() == frame["event_date"].to_numpy()).all()  # parts joined in order
    assert sum(summary.class_counts.values()) == 6_000 == sum(summary.histogram_counts)
    assert [p.name for p in tmp_path.iterdir() if "predictions" in p.name] == ["day3.predictions.parquet"]
