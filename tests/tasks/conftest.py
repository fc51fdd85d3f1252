"""Fixtures shared by the task tests: a logged model and registered versions to move aliases between."""

from __future__ import annotations

import json

import pytest

from tasks import tracking as tr
from tasks.data import generate_demo, infer_features
from tasks.train import fit_pipeline


@pytest.fixture(scope="module")
def logged(tracking):
    frame = generate_demo(500, seed=3)
    spec = infer_features(frame, "churned")
    model = fit_pipeline(frame, spec, "random_forest", {"n_estimators": 5}, seed=0)
    run_id = tr.start_run(tracking, "promotion-tests")
    return tr.log_sklearn_model(tracking, run_id, model, frame[spec.features].head(3))


@pytest.fixture
def versions(tracking, model_name, logged) -> str:
    """Three versions; v1 and v2 passed the gate, v3 did not."""
    for passed in (True, True, False):
        version = tr.register_model_version(tracking, model_name, logged)
        tr.tag_version(tracking, model_name, version, {tr.GATE_TAG: json.dumps({"promote": passed})})
    return model_name
