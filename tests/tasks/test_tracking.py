from __future__ import annotations

import numpy as np
import pytest

from nightshift.errors import TrackingError
from tasks import tracking as tr
from tasks.data import fingerprint, generate_demo, infer_features
from tasks.train import fit_pipeline


@pytest.fixture(scope="module")
def fitted():
    frame = generate_demo(1_000, seed=11)
    spec = infer_features(frame, "churned")
    return frame, spec, fit_pipeline(frame, spec, "random_forest", {"n_estimators": 15}, seed=0)


def test_logged_model_round_trips_through_the_registry(tracking, model_name, fitted) -> None:
    frame, spec, model = fitted
    run_id = tr.start_run(tracking, "unit", tags={"prefect.flow_run_id": "abc"})
    ds = tr.DatasetRef(frame, "demo-train", "nightshift-demo://seed=11", fingerprint(frame), "training", "churned")
    logged = tr.log_training(
        tracking, run_id, params={"a": 1}, metrics={"test_accuracy": 0.5, "nan_metric": float("nan")},
        datasets=[ds], model=model, input_example=frame[spec.features].head(3),
        artifacts={"features.json": spec.model_dump(mode="json")},
    )
    assert tr.register_model_version(tracking, model_name, logged, tags={"k": "v"}) == "1"
    assert tr.register_model_version(tracking, model_name, logged) == "2"
    tr.finish_run(tracking, run_id)

    sample = generate_demo(200, seed=99)[spec.features]
    loaded = tr.load_pyfunc(tracking, model_name, version="1")
    np.testing.assert_array_equal(loaded.predict(sample), model.predict(sample))
    sk = tr.load_sklearn(tracking, model_name, version="1")
    np.testing.assert_allclose(sk.predict_proba(sample), model.predict_proba(sample))

    run = tr.get_run(tracking, run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["prefect.flow_run_id"] == "abc"
    assert run.data.params["a"] == "1" and "nan_metric" not in run.data.metrics
    (inp,) = run.inputs.dataset_inputs
    tags = {t.key: t.value for t in inp.tags}
    assert tags["nightshift.fingerprint"] == fingerprint(frame) and tags["mlflow.data.context"] == "training"
    assert inp.dataset.digest == fingerprint(frame)[:32]
    assert [str(v.version) for v in tr.list_versions(tracking, model_name)] == ["2", "1"]


def test_list_versions_of_unknown_model_is_empty(tracking) -> None:
    assert tr.list_versions(tracking, "never-registered") == []


def test_model_uri_needs_exactly_one_selector() -> None:
    assert tr.model_uri("m", version="3") == "models:/m/3"
    assert tr.model_uri("m", alias="champion") == "models:/m@champion"
    with pytest.raises(TrackingError):
        tr.model_uri("m")
