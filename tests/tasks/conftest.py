"""Fixtures shared by the task tests: a logged model and registered versions to move aliases between."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from nightshift.settings import PROJECT_ROOT
from tasks.catalogue.schema import load_catalogue
from tasks.data.contract import infer_contract
from tasks.data.datasets import infer_features
from tasks.data.demo import DEMO_START, generate_demo, land_demo_night
from tasks.model.gate import GateDecision
from tasks.model.train import fit_pipeline
from tasks.registry.runs import CONTRACT_ARTIFACT, log_dict, log_sklearn_model, start_run
from tasks.registry.versions import GATE_TAG, register_model_version, tag_version


@pytest.fixture(scope="module")
def logged(tracking):
    frame = generate_demo(500, seed=3)
    spec = infer_features(frame, "churned")
    model = fit_pipeline(frame, spec, "random_forest", {"n_estimators": 5}, seed=0)
    run_id = start_run(tracking, "promotion-tests")
    log_dict(tracking, run_id, infer_contract(frame, spec).model_dump(mode="json"), CONTRACT_ARTIFACT)
    return log_sklearn_model(tracking, run_id, model, frame[spec.features].head(3))


@pytest.fixture
def versions(tracking, model_name, logged) -> str:
    """Three versions; v1 and v2 passed the gate, v3 did not."""
    for passed in (True, True, False):
        version = register_model_version(tracking, model_name, logged)
        decision = decision_for(version, passed)
        tag_version(tracking, model_name, version, {GATE_TAG: decision.model_dump_json()})
    return model_name


def decision_for(version: str, promote: bool, champion: str | None = None) -> GateDecision:
    """A gate decision as the gate records it on a version."""
    return GateDecision(promote=promote, reason="test decision", metric="roc_auc", rows=100, challenger=0.8,
                        champion=None if champion is None else 0.7, confidence=0.95, min_margin=0.0,
                        absolute_floor=0.6, resamples=100, challenger_version=version, champion_version=champion)


@pytest.fixture(scope="module")
def demo():
    """The catalogue's churn and fraud models (models.yaml)."""
    churn, fraud = load_catalogue(PROJECT_ROOT / "models.yaml").models[:2]
    return churn, fraud


def land_nights(model, state_dir: Path, nights: range, rows: int = 400, skip: tuple[int, ...] = ()) -> None:
    """The demo's files of nights DEMO_START + n for n in `nights` (but `skip`), without drift."""
    for n in nights:
        if n not in skip:
            land_demo_night(model, DEMO_START + timedelta(days=n), state_dir, rows, drift_for=lambda d: None)
