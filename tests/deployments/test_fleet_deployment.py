"""The fleet on a real Prefect server: its model nights as deployment runs that several workers share."""

from __future__ import annotations

import json
import re
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from tasks.catalogue.schema import load_catalogue
from tasks.data.demo import DEMO_START, land_demo_night
from tasks.registry.versions import CHAMPION, get_alias
from tests.catalogues import two_demo_models, write_catalogue
from tests.deployments.prefect_stack import deploy_and_start_worker, start_stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
POOL = "it-fleet"


def test_fleet_nights_run_as_model_night_runs_shared_by_workers(tmp_path: Path, tracking) -> None:
    models = two_demo_models("fleet-")
    for model in models:  # never a real 02:00 run during the test
        model["schedule"] = {"cron": "0 0 1 1 *", "timezone": "UTC"}
    write_catalogue(tmp_path, models)
    state = tmp_path / "state"
    churn, fraud = load_catalogue(tmp_path / "models.yaml").models
    for n in range(5):
        land_demo_night(churn, DEMO_START + timedelta(days=n), state, rows=3_000)
        land_demo_night(fraud, DEMO_START + timedelta(days=n), state, rows=3_000)
    env = {"NIGHTSHIFT_CATALOGUE_PATH": str(tmp_path / "models.yaml"), "NIGHTSHIFT_STATE_DIR": str(state),
           "PREFECT_WORKER_QUERY_SECONDS": "2"}
    stack = start_stack(tmp_path / "stack", **env)
    try:
        # One slot per worker: the fleet run holds one worker, so its model nights must go to the other two.
        deploy_and_start_worker(stack, POOL, "--limit", "1")
        for extra in ("worker-2", "worker-3"):
            stack.spawn(extra, [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--limit", "1",
                                "--name", extra, "--prefetch-seconds", "5"])
        nights = {"night": str(DEMO_START + timedelta(days=3)), "until": str(DEMO_START + timedelta(days=4))}
        out = stack.cli("deployment", "run", "fleet/fleet", "--params",
                        json.dumps({"params": {**nights, "via_deployments": True, "concurrency": 2}}))
        run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)
        run = stack.wait_for_run(run_id, timeout=600)
        logs = "\n".join(p.read_text() for p in stack.logs.glob("worker*.log"))
        assert run["state_type"] == "COMPLETED", (run["state"]["message"], logs[-6000:])
        children = stack.flow_runs(stack.deployment("model-night/model-night")["id"])
        assert len(children) == 4 and all(c["state_type"] == "COMPLETED" for c in children)
        assert sorted((c["parameters"]["params"]["model_name"], c["parameters"]["params"]["night"])
                      for c in children) == sorted((m.name, nights[k]) for m in (churn, fraud) for k in nights)
        ran_by = {log.stem: _started(log.read_text()) & {c["id"] for c in children}
                  for log in stack.logs.glob("worker*.log")}
        assert sum(1 for ids in ran_by.values() if ids) >= 2, ran_by  # the model nights were shared by workers
        assert sorted(i for ids in ran_by.values() for i in ids) == sorted(c["id"] for c in children)
    finally:
        stack.stop()
    assert get_alias(tracking, churn.name, CHAMPION) == "1" == get_alias(tracking, fraud.name, CHAMPION)


def _started(worker_log: str) -> set[str]:
    """Flow runs a worker started: submitted, and not aborted because another worker had it already."""
    submitted = set(re.findall(r"submitting flow run '([0-9a-f-]{36})'", worker_log))
    return submitted - set(re.findall(r"Aborted submission of flow run '([0-9a-f-]{36})'", worker_log))
