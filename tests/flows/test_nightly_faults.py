"""The nightly loop against faults the way a user meets them: a registry that errors, two nights racing for one
model, and `kill -9` of the night's process at any moment. Nights run as real processes against a real Prefect API."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from flows.nightly import NightlyParams, nightly
from flows.train import EstimatorParams
from tasks.catalogue.config import GateConfig
from tasks.data.datasets import DatasetParams
from tasks.data.demo import DemoDrift
from tasks.registry.audit import read_audit
from tasks.registry.promote import recorded_decision
from tasks.registry.store import TrackingConfig
from tasks.registry.versions import CHAMPION, get_alias, list_versions
from tests.conftest import free_port, wait_until_ok
from tests.deployments.prefect_stack import stop_process
from tests.flaky_proxy import FlakyProxy

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.integration]
WORLDS = (DemoDrift(), DemoDrift(concept=1.0))  # alternating worlds: each night's challenger beats the champion


def _night(name: str, day: int, world: int, *, reference: bool = False, force: bool = True) -> NightlyParams:
    return NightlyParams(
        model_name=name, batches=[DatasetParams(source="demo", day=day, rows=2_500, drift=WORLDS[world])], window=1,
        force_retrain=force, reference=DatasetParams(source="demo", day=0, rows=3_000) if reference else None,
        estimator=EstimatorParams(param_grid={"n_estimators": [20], "min_samples_leaf": [5]}), cv_folds=2,
        gate=GateConfig(resamples=200, absolute_floor=0.55), seed=7)


def _env(**extra: str) -> dict[str, str]:
    """The test's environment plus the harness' Prefect API, so a child process talks to the same server."""
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PREFECT_LOGGING_LEVEL": "WARNING",
            **extra}


def _spawn(params: NightlyParams, log: Path, **extra: str) -> subprocess.Popen:
    """A night as its own process: `python -m flows.nightly --params …`."""
    return subprocess.Popen([sys.executable, "-m", "flows.nightly", "--params", params.model_dump_json()],
                            env=_env(**extra), stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _check_invariants(tracking, name: str) -> None:
    """champion passed the gate; one version per window; one promote record per promoted version."""
    champion = get_alias(tracking, name, CHAMPION)
    decision = recorded_decision(tracking, name, champion)
    assert decision is not None and decision.promote, f"champion v{champion} has no promoting gate decision"
    windows = [v.tags.get("nightshift.window_fingerprint") for v in list_versions(tracking, name)]
    assert None not in windows, "a version was registered without its window tag"
    assert len(windows) == len(set(windows)), f"two versions for one window: {windows}"
    promoted = [r.to_version for r in read_audit(tracking, name) if r.action == "promote"]
    assert len(promoted) == len(set(promoted)), f"a version promoted twice: {promoted}"
    assert champion in promoted, f"champion v{champion} has no promote record"


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """A real `mlflow server` on loopback with its own SQLite store and artifact root."""
    port = free_port()
    log = tmp_path / "mlflow-server.log"
    bin_dir = Path(sys.executable).parent
    proc = subprocess.Popen(
        [str(bin_dir / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination",
         str(tmp_path / "server-artifacts")],
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        wait_until_ok(proc, f"http://127.0.0.1:{port}/health", log, 120, "mlflow server")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def test_a_registry_that_errors_fails_the_night_and_changes_nothing(mlflow_server: str, monkeypatch) -> None:
    proxy = FlakyProxy(mlflow_server)
    monkeypatch.setenv("NIGHTSHIFT_MLFLOW_TRACKING_URI", proxy.url)
    monkeypatch.setenv("NIGHTSHIFT_MLFLOW_ARTIFACT_LOCATION", "mlflow-artifacts:/")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # MLflow's own retries; Prefect's come on top
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    cfg = TrackingConfig(tracking_uri=proxy.url, registry_uri=proxy.url, experiment_name="tests")
    name = f"proxied-{uuid.uuid4().hex[:8]}"
    try:
        first = nightly(_night(name, 1, 0, reference=True))
        assert first.action == "promoted" and first.champion_after == "1"
        audit, versions = len(read_audit(cfg, name)), len(list_versions(cfg, name))

        # Alias reads answer 503: before, the night read that as "no champion" and gated against the floor only.
        proxy.rule = lambda method, path: 503 if "registered-models/alias" in path else None
        state = nightly(_night(name, 2, 1), return_state=True)
        proxy.rule = lambda method, path: None
        assert state.is_failed(), state
        assert proxy.url in state.message and "reading alias 'champion'" in state.message, state.message
        assert len(proxy.failed) >= 3  # the first read and Prefect's two retries
        assert get_alias(cfg, name, CHAMPION) == "1"
        assert (len(read_audit(cfg, name)), len(list_versions(cfg, name))) == (audit, versions)

        # A missing alias is still just "absent".
        assert get_alias(cfg, name, "no-such-alias") is None and get_alias(cfg, "no-such-model", "x") is None
    finally:
        proxy.close()


def test_nights_racing_promote_at_most_once_against_one_champion(tracking, tmp_path: Path) -> None:
    name = f"race-{uuid.uuid4().hex[:8]}"
    assert nightly(_night(name, 1, 0, reference=True)).champion_after == "1"
    # Three processes at once: two different nights (other days of the drifted world: both challengers beat v1
    # on their own holdout), and the second of them twice (one training window, started together).
    logs = [tmp_path / f"night-{i}.log" for i in range(3)]
    procs = [_spawn(_night(name, day, 1), log) for day, log in zip((2, 3, 3), logs)]
    for proc in procs:
        assert proc.wait(timeout=900) == 0, "\n".join(log.read_text()[-3000:] for log in logs)
    records = read_audit(tracking, name)
    against_v1 = [r for r in records if r.action == "promote" and r.from_version == "1"]
    assert len(against_v1) == 1, records
    winner = against_v1[0].to_version
    assert [r.action for r in records if r.action not in ("promote", "superseded")] == [], records
    assert all(r.from_version == winner for r in records if r.action == "superseded"), records
    assert get_alias(tracking, name, CHAMPION) == winner
    assert len(list_versions(tracking, name)) == 3  # v1 and one per window
    _check_invariants(tracking, name)


def test_a_night_killed_inside_the_promotion_lock_is_finished_by_its_rerun(tracking, tmp_path: Path) -> None:
    name = f"killed-{uuid.uuid4().hex[:8]}"
    assert nightly(_night(name, 1, 0, reference=True)).champion_after == "1"
    log = tmp_path / "night.log"
    proc = _spawn(_night(name, 2, 1), log, NIGHTSHIFT_FAULT="after-move")  # SIGKILL after the alias move
    assert proc.wait(timeout=600) == -signal.SIGKILL, log.read_text()[-3000:]
    assert get_alias(tracking, name, CHAMPION) == "2"
    assert [r.action for r in read_audit(tracking, name)] == ["promote"]  # the night died before its record

    started = time.monotonic()
    rerun = _spawn(_night(name, 2, 1), log)
    assert rerun.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert time.monotonic() - started < 120  # the dead holder's lock did not make the rerun wait it out
    records = read_audit(tracking, name)
    assert [(r.action, r.from_version, r.to_version) for r in records] == [("promote", None, "1"), ("promote", "1", "2")]
    assert "interrupted" in records[-1].reason
    _check_invariants(tracking, name)


def test_kill_9_at_random_moments_then_rerun(tracking, tmp_path: Path) -> None:
    """20 nights, each killed at a random moment and rerun: the invariants hold after every rerun."""
    name = f"chaos-{uuid.uuid4().hex[:8]}"
    assert nightly(_night(name, 1, 0, reference=True)).champion_after == "1"
    rng = random.Random(int(os.environ.get("CHAOS_SEED", "11")))
    kills, log = int(os.environ.get("CHAOS_KILLS", "20")), tmp_path / "chaos.log"
    durations: list[float] = []
    for i in range(kills):
        params = _night(name, 2 + i, (i + 1) % 2)
        proc = _spawn(params, log)
        # Kill anywhere from start-up to the end of a whole night (as long as the longest rerun so far took).
        try:
            proc.wait(timeout=rng.uniform(1.0, max(durations, default=20.0)))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        started = time.monotonic()
        rerun = _spawn(params, log)
        assert rerun.wait(timeout=300) == 0, log.read_text()[-4000:]
        durations.append(time.monotonic() - started)
        _check_invariants(tracking, name)
    print(f"chaos: {kills} kills, rerun seconds {[round(d, 1) for d in durations]}")
    assert get_alias(tracking, name, CHAMPION) != "1"  # the loop kept promoting through the kills
