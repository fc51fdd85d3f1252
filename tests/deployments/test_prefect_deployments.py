"""prefect.yaml for real: `prefect server start` (SQLite and PostgreSQL), a bare `prefect deploy --all`, make-deploy,
a process worker, flow runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from deployments import postgres
from nightshift.settings import PROJECT_ROOT
from tasks.catalogue.schema import load_catalogue
from tasks.registry.audit import read_audit
from tasks.registry.runs import get_run
from tasks.registry.versions import CHAMPION, get_alias, list_versions, version_run_id
from tests.catalogues import two_demo_models, write_catalogue
from tests.conftest import free_port
from tests.deployments.prefect_stack import PrefectStack, deploy_and_start_worker, start_stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
POOL = "it-process"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"  # screenshots (git-ignored)
# Tests must never meet a real 02:00 run: a cron that fires once a year, in a non-UTC zone to check both land.
CRON, TIMEZONE = "0 0 1 1 *", "Europe/Berlin"


def settings_env(folder: Path) -> dict[str, str]:
    """The stack's NIGHTSHIFT_* settings: a catalogue of two models scheduled once a year, written to `folder`."""
    models = two_demo_models("it-")
    for model in models:
        model["schedule"] = {"cron": CRON, "timezone": TIMEZONE}
    folder.mkdir(parents=True, exist_ok=True)
    return {"NIGHTSHIFT_CATALOGUE_PATH": str(write_catalogue(folder, models)), "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_LOGGING_LEVEL": "INFO"}


def catalogue_names(stack: PrefectStack) -> list[str]:
    """The models of the stack's catalogue."""
    return [m.name for m in load_catalogue(Path(stack.env["NIGHTSHIFT_CATALOGUE_PATH"])).models]


def small_night(model_name: str, **extra: object) -> dict:
    """Nightly parameters small enough for a test (one demo batch, a 20-tree forest)."""
    return {"model_name": model_name, "batches": [{"source": "demo", "day": 1, "rows": 3000}],
            "reference": {"source": "demo", "day": 0, "rows": 4000}, "window": 1, "cv_folds": 2,
            "estimator": {"kind": "random_forest", "param_grid": {"n_estimators": [20], "max_depth": [6]}},
            "gate": {"resamples": 200}, **extra}


def _start(tmp: Path, database_url: str | None = None) -> PrefectStack:
    stack = start_stack(tmp, database_url, **settings_env(tmp / "catalogue"))
    try:
        deploy_and_start_worker(stack, POOL)
    except Exception:
        stack.stop()
        raise
    return stack


@pytest.fixture(scope="module")
def sqlite_stack(tmp_path_factory):
    stack = _start(tmp_path_factory.mktemp("prefect-sqlite"))
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def postgres_stack(tmp_path_factory):
    """Prefect server on PostgreSQL: the one .ci/run started (NIGHTSHIFT_TEST_POSTGRES_URL), else our own."""
    url = os.environ.get("NIGHTSHIFT_TEST_POSTGRES_URL")
    data_dir = None
    if not url:
        # PostgreSQL refuses root; as root its data dir must be reachable by the 'postgres' user, so not under
        # pytest's 0700 tmp dirs.
        data_dir = Path(tempfile.mkdtemp(prefix="nightshift-pg-"))
        url = postgres.start(data_dir, free_port(), databases=("prefect",)).url("prefect", "postgresql+asyncpg")
    try:
        stack = _start(tmp_path_factory.mktemp("prefect-postgres"), url)
        yield stack
        stack.stop()
    finally:
        if data_dir is not None:
            postgres.stop(data_dir)
            shutil.rmtree(data_dir, ignore_errors=True)


def test_deploy_registers_every_deployment_with_its_schedule_and_limits(sqlite_stack) -> None:
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema

    models = catalogue_names(sqlite_stack)
    names = ["nightly/nightly", "monitor/monitor", "train/train", "batch-predict/batch-predict", "rollback/rollback",
             "model-night/model-night", "fleet/fleet", "llm-eval/llm-eval", *[f"model-night/{m}" for m in models]]
    deployments = {n: sqlite_stack.deployment(n) for n in names}
    assert all(d["work_pool_name"] == POOL and d["enforce_parameter_schema"] for d in deployments.values())
    assert [n for n, d in deployments.items() if d["schedules"]] == [f"model-night/{m}" for m in models]
    automations = {a["name"]: a for a in sqlite_stack.api("POST", "/automations/filter", json={})}
    assert set(automations) == {f"{m}-on-drift" for m in models}
    for model in models:  # each catalogue model: its own schedule, one night at a time, its own drift trigger
        night = deployments[f"model-night/{model}"]
        [schedule] = night["schedules"]
        assert (schedule["schedule"]["cron"], schedule["schedule"]["timezone"], schedule["active"]) == (CRON, TIMEZONE,
                                                                                                      True)
        assert night["parameters"] == {"params": {"model_name": model}}
        assert night["global_concurrency_limit"]["limit"] == 1
        assert night["concurrency_options"]["collision_strategy"] == "ENQUEUE"
        drift = automations[f"{model}-on-drift"]
        assert drift["trigger"]["expect"] == ["nightshift.drift.detected"] and drift["trigger"]["within"] == 600
        assert drift["trigger"]["match"] == {"prefect.resource.id": f"nightshift.model.{model}"}
        assert [(a["type"], a["deployment_id"]) for a in drift["actions"]] == [("run-deployment", night["id"])]
    # each UI form is the flow's own parameter schema
    for full_name, deployment in deployments.items():
        flow = load_flow_from_entrypoint(deployment["entrypoint"])
        local = json.loads(json.dumps(parameter_schema(flow).model_dump_for_openapi()))
        assert deployment["parameter_openapi_schema"] == local, full_name


def test_a_scheduled_night_covers_its_scheduled_date_in_the_model_time_zone(sqlite_stack) -> None:
    """A Scheduled run of model-night/<model> as the scheduler makes it, due 23:30 UTC on the 24th: in the model's
    zone (Europe/Berlin) that is the 25th, so the night is the 25th; nothing landed, so it ends no-data, Completed."""
    model = catalogue_names(sqlite_stack)[0]
    deployment = sqlite_stack.deployment(f"model-night/{model}")
    created = sqlite_stack.api("POST", f"/deployments/{deployment['id']}/create_flow_run", json={
        "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": "2026-11-24T23:30:00+00:00"}}})
    run = sqlite_stack.wait_for_run(created["id"], timeout=300)

    def logs() -> list[str]:
        return [entry["message"] for entry in sqlite_stack.api("POST", "/logs/filter", json={
            "logs": {"flow_run_id": {"any_": [created["id"]]}}, "limit": 200})]

    deadline = time.monotonic() + 30  # the worker's log batches may reach the API after the final state
    while not any(f"{model}: no-data" in m for m in logs()) and time.monotonic() < deadline:
        time.sleep(1.0)
    logs = logs()
    assert run["state_type"] == "COMPLETED", (run["state"], logs[-20:])
    assert run["parameters"] == {"params": {"model_name": model}}
    assert any(f"{model}: no-data" in m and "no data for 2026-11-25 at " in m for m in logs), logs[-20:]


def test_bare_prefect_deploy_takes_the_defaults_and_make_deploy_the_settings(tmp_path) -> None:
    """`prefect deploy --all` from the project root with no NIGHTSHIFT_* set, then make deploy with overrides."""
    stack = start_stack(tmp_path)
    try:
        bare = {k: v for k, v in stack.env.items() if not k.startswith("NIGHTSHIFT_")}

        def deployments() -> dict[str, dict]:
            return {d["name"]: d for d in stack.api("POST", "/deployments/filter", json={})}

        def run(cmd: list[str], env: dict[str, str]) -> None:
            out = subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, f"{cmd}: {out.stdout[-3000:]}\n{out.stderr[-3000:]}"

        prefect = [sys.executable, "-m", "prefect"]
        run([*prefect, "work-pool", "create", "nightshift-process", "--type", "process"], bare)
        run([*prefect, "--no-prompt", "deploy", "--all"], bare)
        pull = [{"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT_ROOT)}}]
        created = deployments()
        static = {"nightly", "monitor", "train", "batch-predict", "rollback", "model-night", "fleet", "llm-eval"}
        assert set(created) == static | {"demo-churn", "demo-fraud"}  # the committed models.yaml's
        assert all(d["work_pool_name"] == "nightshift-process" and d["pull_steps"] == pull for d in created.values())
        scheduled = {name: [(s["schedule"]["cron"], s["schedule"]["timezone"]) for s in d["schedules"]]
                     for name, d in created.items() if d["schedules"]}
        assert scheduled == {"demo-churn": [("0 2 * * *", "UTC")], "demo-fraud": [("30 2 * * *", "Europe/Berlin")]}

        # make deploy with another pool and catalogue: its models deployed, the demo models' deployments paused
        env = settings_env(tmp_path / "catalogue")
        models = [m.name for m in load_catalogue(Path(env["NIGHTSHIFT_CATALOGUE_PATH"])).models]
        out = subprocess.run([sys.executable, "-m", "deployments.deploy"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=300, env={**bare, "NIGHTSHIFT_WORK_POOL": "other", **env})
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "paused deployment model-night/demo-churn" in out.stdout, out.stdout[-3000:]
        updated = deployments()
        assert set(updated) == set(created) | set(models)
        assert {name: d["id"] for name, d in updated.items() if name in created} == \
            {name: d["id"] for name, d in created.items()}
        assert all(d["work_pool_name"] == "other" and d["pull_steps"] == pull
                   for name, d in updated.items() if name in static | set(models))
        assert sorted(name for name, d in updated.items() if d["paused"]) == ["demo-churn", "demo-fraud"]
        for model in models:
            [schedule] = updated[model]["schedules"]
            assert (schedule["schedule"]["cron"], schedule["schedule"]["timezone"]) == (CRON, TIMEZONE)
        assert sorted(a["name"] for a in stack.api("POST", "/automations/filter", json={})) == sorted(
            f"{m}-on-drift" for m in ["demo-churn", "demo-fraud", *models])
    finally:
        stack.stop()


@pytest.mark.parametrize("stack_name", ["sqlite_stack", "postgres_stack"])
def test_nightly_deployment_run_completes_and_mlflow_has_the_champion(request, stack_name, tracking) -> None:
    stack: PrefectStack = request.getfixturevalue(stack_name)
    name = f"it-{stack_name.split('_')[0]}-{uuid.uuid4().hex[:6]}"
    out = stack.cli("deployment", "run", "nightly/nightly", "--params", json.dumps({"params": small_night(name)}))
    run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)
    run = stack.wait_for_run(run_id, timeout=420)
    assert run["state_type"] == "COMPLETED", (run["state"], (stack.logs / "worker.log").read_text()[-4000:])
    assert run["parameters"]["params"]["model_name"] == name
    assert get_alias(tracking, name, CHAMPION) == "1"
    mlflow_run = get_run(tracking, version_run_id(tracking, name, "1"))
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.data.tags["nightshift.model_name"] == name
    assert [r.action for r in read_audit(tracking, name)] == ["promote"]
    if stack.database_url:  # the run is in PostgreSQL, not in some SQLite file
        assert _pg_flow_run_state(stack.database_url, run_id) == "COMPLETED"


def _pg_flow_run_state(url: str, run_id: str) -> str | None:
    import asyncio

    import asyncpg

    async def query() -> str | None:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return await conn.fetchval("SELECT state_type FROM flow_run WHERE id = $1", uuid.UUID(run_id))
        finally:
            await conn.close()

    return asyncio.run(query())


def test_train_deployment_on_the_dask_task_runner(sqlite_stack, tracking) -> None:
    """The scale path by setting: NIGHTSHIFT_TASK_RUNNER=dask as a job variable runs the CV search on Dask."""
    name = f"it-dask-{uuid.uuid4().hex[:6]}"
    params = {"params": {"dataset": {"source": "iris"}, "model_name": name, "cv_folds": 3,
                         "estimator": {"kind": "random_forest", "param_grid": {"n_estimators": [10, 20]}}}}
    out = sqlite_stack.cli("deployment", "run", "train/train", "--params", json.dumps(params),
                           "--job-variable", 'env={"NIGHTSHIFT_TASK_RUNNER": "dask", "NIGHTSHIFT_TASK_WORKERS": "2"}')
    run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)
    run = sqlite_stack.wait_for_run(run_id, timeout=300)
    logs = sqlite_stack.api("POST", "/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
    assert run["state_type"] == "COMPLETED", (run["state"], [entry["message"] for entry in logs][-20:])
    assert any("on DaskTaskRunner" in entry["message"] for entry in logs), [entry["message"] for entry in logs][:20]
    assert list_versions(tracking, name)


def test_a_custom_run_from_the_ui_form_completes_with_the_changed_parameters(sqlite_stack, tracking) -> None:
    """Chromium opens the nightly deployment, Run → Custom run, changes fields, submits; the API sees the run."""
    from tests.deployments.ui_driver import RunRejected, launch_browser, start_custom_run

    shots = ARTIFACTS / "ui"
    shots.mkdir(parents=True, exist_ok=True)
    deployment = sqlite_stack.deployment("nightly/nightly")
    name, reason = f"it-ui-{uuid.uuid4().hex[:6]}", f"ui-test-{uuid.uuid4().hex[:6]}"
    changes = {"Registered model name": name, "Trigger reason": reason, "Training window": "2",
               "Labeled batches > Rows": "3000", "Reference data > Rows": "4000", "CV folds": "2"}
    with tempfile.TemporaryDirectory(prefix="nightshift-chromium-") as profile, launch_browser(Path(profile)) as browser:
        page = browser.new_page()
        try:
            with pytest.raises(RunRejected) as refused:  # bounds are enforced before any run exists
                start_custom_run(page, sqlite_stack.ui_url, deployment["id"], {"Training window": "500"})
            assert refused.value.status == 409 and "365" in refused.value.detail
            created = start_custom_run(page, sqlite_stack.ui_url, deployment["id"], changes, shots)
        except Exception:
            page.screenshot(path=str(shots / "failure.png"), full_page=True)
            raise
    run = sqlite_stack.wait_for_run(created["id"], timeout=420)
    assert run["state_type"] == "COMPLETED", (run["state"], (sqlite_stack.logs / "worker.log").read_text()[-4000:])
    params = run["parameters"]["params"]
    assert (params["reason"], params["window"], params["model_name"]) == (reason, 2, name)
    assert params["batches"][0]["rows"] == 3000 and params["reference"]["rows"] == 4000
    assert get_alias(tracking, name, CHAMPION) == "1"


_EMIT = """
import sys
from flows.monitor import _emit_events
from prefect.events.worker import EventsWorker
from tasks.monitoring.drift import ColumnDrift, DriftResult

drift = DriftResult(dataset_drift=True, drift_share=0.24, drift_share_threshold=0.2, drifted_columns=["age", "plan"],
                    columns=[ColumnDrift(column=c, kind="num", method="wasserstein", score=0.3, threshold=0.1,
                                         drifted=True) for c in ("age", "plan")],
                    reference_rows=1000, current_rows=1000, sampled_reference_rows=1000, sampled_current_rows=1000)
for name in sys.argv[1:]:
    _emit_events(name, "3", drift, None, ["data drift"])
EventsWorker.drain_all()
"""


def test_a_burst_of_drift_events_starts_one_night_per_model(sqlite_stack) -> None:
    """The monitor's own event emitter, 5 events for one catalogue model and 2 for the other: one run each of its
    model-night deployment, with the details; an event for a model outside the catalogue starts nothing."""
    first, second = catalogue_names(sqlite_stack)
    stranger = f"it-drift-{uuid.uuid4().hex[:6]}"
    deployments = {m: sqlite_stack.deployment(f"model-night/{m}")["id"] for m in (first, second)}

    def runs() -> list[dict]:
        return [r for m, d in deployments.items() for r in sqlite_stack.flow_runs(d)
                if r["parameters"].get("params", {}).get("reason") == "drift"]

    # Pause the pool: this test is about which runs the automations create, not about running the nights.
    sqlite_stack.api("PATCH", f"/work_pools/{POOL}", json={"is_paused": True})
    try:
        start = time.monotonic()
        out = subprocess.run([sys.executable, "-c", _EMIT, *[first] * 5, *[second] * 2, stranger],
                             env=sqlite_stack.env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(runs()) >= 2:
                time.sleep(3.0)  # would a late duplicate still appear?
                break
            time.sleep(0.5)
        seen = time.monotonic() - start
        created = runs()
        assert sorted((r["deployment_id"], r["parameters"]["params"]["model_name"]) for r in created) == sorted(
            (d, m) for m, d in deployments.items()), created
        params = next(r for r in created if r["parameters"]["params"]["model_name"] == first)["parameters"]["params"]
        trigger = params["trigger"]
        assert (trigger["event"], trigger["model_version"]) == ("nightshift.drift.detected", "3")
        assert trigger["drift_share"] == 0.24 and trigger["drifted_columns"] == ["age", "plan"]  # native JSON types
        assert len(trigger["event_id"]) == 36 and trigger["occurred"].startswith("20")
        all_runs = sqlite_stack.api("POST", "/flow_runs/filter", json={})
        assert not [r for r in all_runs if r["parameters"].get("params", {}).get("model_name") == stranger]
        print(f"drift events → {len(created)} runs, seen after {seen:.1f} s")
    finally:
        for run in runs():
            sqlite_stack.api("DELETE", f"/flow_runs/{run['id']}")
        sqlite_stack.api("PATCH", f"/work_pools/{POOL}", json={"is_paused": False})


def test_serve_flows_registers_the_same_deployments_and_runs_them(tmp_path, tracking) -> None:
    """make serve-flows: one process, no pool or worker; same schedule and trigger; a run completes."""
    stack = start_stack(tmp_path, **settings_env(tmp_path / "catalogue"))
    try:
        models = catalogue_names(stack)
        expected = {"nightly", "monitor", "train", "batch-predict", "rollback", "model-night", "fleet", "llm-eval",
                    *models}
        stack.spawn("serve", [sys.executable, "-m", "deployments.serve"])
        triggers = sorted(f"{m}-on-drift" for m in models)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # serve registers each deployment, then its trigger: wait for both
            names = {d["name"] for d in stack.api("POST", "/deployments/filter", json={})}
            automations = sorted(a["name"] for a in stack.api("POST", "/automations/filter", json={}))
            if len(names) == len(expected) and automations == triggers:
                break
            time.sleep(1.0)
        assert names == expected, (stack.logs / "serve.log").read_text()[-3000:]
        night = stack.deployment(f"model-night/{models[0]}")
        assert night["work_pool_name"] is None  # served, not pooled
        [schedule] = night["schedules"]
        assert (schedule["schedule"]["cron"], schedule["schedule"]["timezone"]) == (CRON, TIMEZONE)
        assert automations == triggers
        name = f"it-serve-{uuid.uuid4().hex[:6]}"
        params = {"params": {"dataset": {"source": "iris"}, "model_name": name, "cv_folds": 2,
                             "estimator": {"kind": "random_forest", "param_grid": {"n_estimators": [10]}}}}
        created = stack.api("POST", f"/deployments/{stack.deployment('train/train')['id']}/create_flow_run",
                            json={"parameters": params})
        run = stack.wait_for_run(created["id"], timeout=300)
        assert run["state_type"] == "COMPLETED", (stack.logs / "serve.log").read_text()[-4000:]
        assert list_versions(tracking, name)
    finally:
        stack.stop()
