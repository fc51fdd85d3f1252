"""`make stack` for real: PostgreSQL, Prefect and MLflow servers with auth, a worker, the model server with its token.

Every API refuses a caller without credentials (401) or with wrong ones; with the stack's credentials a model's night
runs as a deployment run on the worker, is tracked in MLflow on PostgreSQL (artifacts through the server), promotes
and hot-swaps the model server. Stop leaves no process behind; a restart keeps the credentials that PostgreSQL and
MLflow's user store remember.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from deployments import stack
from tasks.catalogue.schema import load_catalogue
from tasks.data.demo import DEMO_START, land_demo_night
from tests.catalogues import two_demo_models, write_catalogue
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _api(base: str, auth: tuple[str, str], method: str, path: str, **kwargs) -> httpx.Response:
    response = httpx.request(method, f"{base}{path}", auth=auth, timeout=30, **kwargs)
    response.raise_for_status()
    return response


def test_stack_runs_a_night_behind_auth_and_stops_clean(tmp_path: Path) -> None:
    # PostgreSQL refuses root; as root its data dir must be reachable by the 'postgres' user (not pytest's 0700 dirs).
    base = Path(tempfile.mkdtemp(prefix="nightshift-stack-"))
    base.chmod(0o755)
    try:
        _night_behind_auth(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _night_behind_auth(base: Path) -> None:
    fraud = two_demo_models("stack-")[1]
    fraud["schedule"] = {"cron": "0 0 1 1 *", "timezone": "UTC"}  # never a real 02:00 run during the test
    catalogue = write_catalogue(base, [fraud])
    model = load_catalogue(catalogue).models[0]
    state = base / "state"
    cfg = stack.StackConfig(state, pg_port=free_port(), prefect_port=free_port(), mlflow_port=free_port(),
                            server_port=free_port(), workers=1,
                            env={"NIGHTSHIFT_CATALOGUE_PATH": str(catalogue), "PREFECT_WORKER_QUERY_SECONDS": "2"})
    for day in range(4):  # where the stack's workers look: its clients' state dir
        land_demo_night(model, DEMO_START + timedelta(days=day), cfg.data_dir, rows=2_000)
    try:
        running = stack.start(cfg, log=lambda *_: None)
        creds = stack.read_env_file(cfg.home / "credentials.env")
        assert stat.S_IMODE((cfg.home / "credentials.env").stat().st_mode) == 0o600
        assert stat.S_IMODE((cfg.home / "client.env").stat().st_mode) == 0o600
        user, _, password = creds["PREFECT_SERVER_API_AUTH_STRING"].partition(":")
        prefect_api, mlflow = f"{cfg.prefect_url}/api", cfg.mlflow_url
        mlflow_login = (creds["MLFLOW_TRACKING_USERNAME"], creds["MLFLOW_TRACKING_PASSWORD"])

        # No credentials, or wrong ones: 401 from every API.
        refused = {
            "prefect, none": httpx.post(f"{prefect_api}/flows/filter", json={}, timeout=10),
            "prefect, wrong": httpx.post(f"{prefect_api}/flows/filter", json={}, auth=(user, "wrong"), timeout=10),
            "mlflow, none": httpx.get(f"{mlflow}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10),
            "mlflow, wrong": httpx.get(f"{mlflow}/api/2.0/mlflow/experiments/search?max_results=1",
                                       auth=(mlflow_login[0], "wrong"), timeout=10),
            "model server reload, none": httpx.post(f"{cfg.server_url}/reload", timeout=10),
            "model server reload, wrong": httpx.post(f"{cfg.server_url}/reload", timeout=10,
                                                     headers={"Authorization": "Bearer wrong"}),
        }
        assert {k: r.status_code for k, r in refused.items()} == {k: 403 if k == "model server reload, wrong" else 401
                                                                  for k in refused}  # a wrong token: forbidden
        assert _api(prefect_api, (user, password), "POST", "/flows/filter", json={}).status_code == 200
        assert _api(mlflow, mlflow_login, "GET", "/api/2.0/mlflow/experiments/search?max_results=1").status_code == 200

        # A night as a deployment run on the worker, with the stack's credentials only (from client.env).
        night = str(DEMO_START + timedelta(days=3))
        deployment = _api(prefect_api, (user, password), "GET", f"/deployments/name/model-night/{model.name}").json()
        run = _api(prefect_api, (user, password), "POST", f"/deployments/{deployment['id']}/create_flow_run",
                   json={"parameters": {"params": {"model_name": model.name, "night": night}}}).json()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            run = _api(prefect_api, (user, password), "GET", f"/flow_runs/{run['id']}").json()
            if run["state_type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
                break
            time.sleep(2)
        worker_log = (cfg.home / "logs" / "worker-1.log").read_text(errors="replace")
        assert run["state_type"] == "COMPLETED", (run["state"]["message"], worker_log[-5000:])
        versions = _api(mlflow, mlflow_login, "GET", "/api/2.0/mlflow/registered-models/get",
                        params={"name": model.name}).json()["registered_model"]
        assert {a["alias"]: a["version"] for a in versions.get("aliases", [])}.get("champion") == "1"
        served = httpx.get(f"{cfg.server_url}/models/{model.name}/version", timeout=10).json()
        assert served["model_version"] == "1"  # hot-swapped in by the night's promotion, through the token
        assert any((cfg.home / "mlartifacts").rglob("MLmodel"))  # artifacts went through the MLflow server
        pids = [pid for name, pid in running.pids.items()]
    finally:
        stopped = stack.stop(state, log=lambda *_: None)
    assert sorted(stopped) == sorted(["prefect-server", "mlflow-server", "worker-1", "model-server"])
    assert not [pid for pid in pids if stack._alive(pid)]
    assert not (cfg.home / "client.env").exists() and not (cfg.home / "postgres" / "postmaster.pid").exists()
    try:  # a restart (no deploy, no workers): PostgreSQL and MLflow still accept the kept credentials
        again = stack.StackConfig(state, pg_port=free_port(), prefect_port=free_port(), mlflow_port=free_port(),
                                  workers=0, deploy=False, model_server=False)
        stack.start(again, log=lambda *_: None)
        assert stack.read_env_file(cfg.home / "credentials.env") == creds
        names = _api(again.mlflow_url, mlflow_login, "GET", "/api/2.0/mlflow/registered-models/search").json()
        assert model.name in [m["name"] for m in names["registered_models"]]
    finally:
        stack.stop(state, log=lambda *_: None)

