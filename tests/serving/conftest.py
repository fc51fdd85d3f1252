"""A real model server subprocess on a free loopback port, serving a champion from the session's registry."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_until_ok

TOKEN = "test-token-" + uuid.uuid4().hex[:8]


@dataclass
class Server:
    url: str
    model_name: str
    process: subprocess.Popen
    log: Path


def start_server(model_name: str, log: Path, **env: str) -> Server:
    """The server on a free port, serving `model_name` alone unless `env` names a catalogue (never the project's)."""
    port = free_port()
    environ = {**os.environ, "NIGHTSHIFT_MODEL_NAME": model_name, "NIGHTSHIFT_SERVER_TOKEN": TOKEN,
               "NIGHTSHIFT_SERVER_MAX_ROWS": "500", "NIGHTSHIFT_CATALOGUE_PATH": str(log.with_name("no-models.yaml")),
               **env}
    proc = subprocess.Popen([sys.executable, "-m", "serving.server", "--port", str(port)], env=environ,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until_ok(proc, f"{url}/ready", log, 120, "model server")
    return Server(url, model_name, proc, log)


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)


@pytest.fixture(scope="module")
def champion(prefect_harness, tracking):
    """A demo model registered and promoted to champion (v1)."""
    from flows.train import EstimatorParams, TrainParams, train
    from tasks import tracking as tr
    from tasks.data import DatasetParams

    name = f"srv-{uuid.uuid4().hex[:8]}"
    result = train(TrainParams(dataset=DatasetParams(source="demo", rows=3_000), model_name=name, cv_folds=2,
                               estimator=EstimatorParams(param_grid={"n_estimators": [30], "max_depth": [8]})))
    tr.move_champion(tracking, name, result.model_version)
    return name


@pytest.fixture(scope="module")
def server(champion, tmp_path_factory):
    srv = start_server(champion, tmp_path_factory.mktemp("server") / "server.log")
    yield srv
    stop_server(srv)
