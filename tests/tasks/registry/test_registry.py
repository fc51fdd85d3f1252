"""MLflow tracking against a real registry: models, aliases, the audit trail, errors that are not "absent", crashes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nightshift.errors import TrackingError, TrackingUnavailable
from tasks.data.datasets import fingerprint, infer_features
from tasks.data.demo import generate_demo
from tasks.model.train import fit_pipeline
from tasks.registry import store
from tasks.registry import versions as registry_versions
from tasks.registry.audit import AuditRecord, append_audit, read_audit
from tasks.registry.runs import DatasetRef, finish_run, get_run, log_sklearn_model, log_training, start_run
from tasks.registry.versions import (
    CHAMPION,
    GATE_TAG,
    PREVIOUS,
    AliasState,
    alias_state,
    delete_alias,
    find_version_by_tag,
    get_alias,
    list_versions,
    load_pyfunc,
    load_sklearn,
    load_version,
    model_uri,
    register_model_version,
    restore_aliases,
    version_tags,
)


@pytest.fixture(scope="module")
def fitted():
    frame = generate_demo(1_000, seed=11)
    spec = infer_features(frame, "churned")
    return frame, spec, fit_pipeline(frame, spec, "random_forest", {"n_estimators": 15}, seed=0)


def test_logged_model_round_trips_through_the_registry(tracking, model_name, fitted) -> None:
    frame, spec, model = fitted
    run_id = start_run(tracking, "unit", tags={"prefect.flow_run_id": "abc"})
    ds = DatasetRef(frame, "demo-train", "nightshift-demo://seed=11", fingerprint(frame), "training", "churned")
    logged = log_training(
        tracking, run_id, params={"a": 1}, metrics={"test_accuracy": 0.5, "nan_metric": float("nan")},
        datasets=[ds], model=model, input_example=frame[spec.features].head(3),
        artifacts={"features.json": spec.model_dump(mode="json")},
    )
    assert register_model_version(tracking, model_name, logged, tags={"k": "v"}) == "1"
    assert register_model_version(tracking, model_name, logged) == "2"
    finish_run(tracking, run_id)

    sample = generate_demo(200, seed=99)[spec.features]
    loaded = load_pyfunc(tracking, model_name, version="1")
    np.testing.assert_array_equal(loaded.predict(sample), model.predict(sample))
    sk = load_sklearn(tracking, model_name, version="1")
    np.testing.assert_allclose(sk.predict_proba(sample), model.predict_proba(sample))

    run = get_run(tracking, run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["prefect.flow_run_id"] == "abc"
    assert run.data.params["a"] == "1" and "nan_metric" not in run.data.metrics
    (inp,) = run.inputs.dataset_inputs
    tags = {t.key: t.value for t in inp.tags}
    assert tags["nightshift.fingerprint"] == fingerprint(frame) and tags["mlflow.data.context"] == "training"
    assert inp.dataset.digest == fingerprint(frame)[:32]
    assert [str(v.version) for v in list_versions(tracking, model_name)] == ["2", "1"]


def test_list_versions_of_unknown_model_is_empty(tracking) -> None:
    assert list_versions(tracking, "never-registered") == []


def test_model_uri_needs_exactly_one_selector() -> None:
    assert model_uri("m", version="3") == "models:/m/3"
    assert model_uri("m", alias="champion") == "models:/m@champion"
    with pytest.raises(TrackingError):
        model_uri("m")


def test_move_champion_keeps_previous_and_is_idempotent(tracking, versions) -> None:
    name = versions
    assert registry_versions.move_champion(tracking, name, "1") == AliasState(None, None)
    before = registry_versions.move_champion(tracking, name, "2")
    assert before == AliasState("1", None)
    assert alias_state(tracking, name) == AliasState("2", "1")
    assert registry_versions.move_champion(tracking, name, "2") == AliasState("2", "1")  # same version: nothing moves
    assert alias_state(tracking, name) == AliasState("2", "1")
    restore_aliases(tracking, name, before)
    assert alias_state(tracking, name) == AliasState("1", None)


def test_audit_trail_round_trips_and_tags_versions(tracking, versions) -> None:
    name = versions
    record = AuditRecord(time="20261125T010203.000000Z", model_name=name, action="promote", from_version="1",
                            to_version="2", metric="roc_auc", challenger=0.81, champion=0.79, ci_low=0.005,
                            ci_high=0.03, reason="challenger better", flow_run_id="abc")
    append_audit(tracking, record)
    append_audit(tracking, record.model_copy(update={"time": "20261125T020000.000000Z", "action": "rollback",
                                                       "reason": "bad latency"}))
    assert [r.action for r in read_audit(tracking, name)] == ["promote", "rollback"]
    assert read_audit(tracking, name)[0] == record
    tags = version_tags(tracking, name, "2")
    assert json.loads(tags["nightshift.audit.20261125T010203.000000Z.promote"])["ci_low"] == 0.005


@pytest.mark.integration  # a real process SIGKILLed (~7 s each); the fast suite stays under 3 minutes
@pytest.mark.parametrize("fault", ["between-aliases", "after-champion"])
def test_kill_9_during_promotion_leaves_champion_on_a_gated_version(tracking, versions, fault: str) -> None:
    name = versions
    registry_versions.move_champion(tracking, name, "1")
    code = (f"from tasks.registry.store import TrackingConfig\nfrom tasks.registry.versions import move_champion\n"
            f"cfg = TrackingConfig.model_validate_json({tracking.model_dump_json()!r})\n"
            f"move_champion(cfg, {name!r}, '2')\n")
    env = {**os.environ, "NIGHTSHIFT_FAULT": fault}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr  # really killed mid-promotion
    state = alias_state(tracking, name)
    assert state.champion in ("1", "2")
    assert json.loads(version_tags(tracking, name, state.champion)[GATE_TAG])["promote"] is True
    # a rerun completes the promotion exactly once
    registry_versions.move_champion(tracking, name, "2")
    assert alias_state(tracking, name) == AliasState("2", "1")


def test_not_found_is_absent_and_everything_else_raises(tracking, versions, monkeypatch) -> None:
    assert get_alias(tracking, versions, "no-such-alias") is None  # INVALID_PARAMETER_VALUE on SQLite
    assert get_alias(tracking, "no-such-model", CHAMPION) is None  # RESOURCE_DOES_NOT_EXIST
    with pytest.raises(TrackingError, match="has no version 99"):
        version_tags(tracking, versions, "99")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = store.TrackingConfig(tracking_uri="http://127.0.0.1:9", registry_uri="http://127.0.0.1:9", experiment_name="x")
    for call in (lambda: get_alias(down, versions, CHAMPION), lambda: alias_state(down, versions),
                 lambda: list_versions(down, versions), lambda: delete_alias(down, versions, PREVIOUS)):
        with pytest.raises(TrackingUnavailable, match="MLflow registry at http://127.0.0.1:9 failed"):
            call()


def test_register_sets_tags_in_the_same_call(tracking, model_name, logged) -> None:
    version = register_model_version(tracking, model_name, logged, tags={"nightshift.window_fingerprint": "abc"})
    assert find_version_by_tag(tracking, model_name, "nightshift.window_fingerprint", "abc") == version


def test_load_version_by_alias_or_number(tracking, versions) -> None:
    with pytest.raises(TrackingError, match="has no 'champion' version yet"):
        load_version(tracking, versions)
    registry_versions.move_champion(tracking, versions, "2")
    loaded = load_version(tracking, versions)
    assert (loaded.ref.version, loaded.ref.alias, loaded.contract.label) == ("2", "champion", "churned")
    assert load_version(tracking, versions, "1").ref.version == "1" and hasattr(loaded.model, "predict_proba")


@pytest.mark.parametrize("kind", ["logistic_regression", pytest.param(
    "hist_gradient_boosting", marks=pytest.mark.integration)])  # OpenMP threads: 3 s quiet, 31 s on a busy machine
def test_every_estimator_round_trips_through_the_registry(tracking, model_name, kind) -> None:
    """Every estimator tasks.model.train offers can be logged and loaded (skops refused HistGradientBoosting before)."""
    frame = generate_demo(600, seed=12)
    spec = infer_features(frame, "churned")
    model = fit_pipeline(frame, spec, kind, {}, seed=0)
    run_id = start_run(tracking, "unit")
    version = register_model_version(tracking, model_name,
                                        log_sklearn_model(tracking, run_id, model, frame[spec.features].head(3)))
    loaded = load_sklearn(tracking, model_name, version=version)
    np.testing.assert_allclose(loaded.predict_proba(frame[spec.features]), model.predict_proba(frame[spec.features]))


@pytest.mark.integration  # four real processes importing MLflow: ~25 s
def test_processes_opening_a_new_sqlite_registry_at_once_all_succeed(tmp_path) -> None:
    """The first night of a fleet spread over workers: every process found no database and ran the migrations."""
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    code = ("import sys\nfrom tasks.registry.store import TrackingConfig\nfrom tasks.registry.versions import alias_state\n"
            f"cfg = TrackingConfig(tracking_uri='{uri}', registry_uri='{uri}', experiment_name='race')\n"
            "print(alias_state(cfg, 'model-' + sys.argv[1]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": os.getcwd()}) for i in range(4)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-2000:] for _, err in outputs]
