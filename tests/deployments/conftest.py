"""A real model server subprocess on a free loopback port, serving a champion from the session's registry."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

TOKEN = "test-token-" + uuid.uuid4().hex[:8]


@dataclass
class Server:
    url: str
    model_name: str
    process: subprocess.Popen
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_name: str, log: Path, **env: str) -> Server:
    port = free_port()
    environ = {**os.environ, "NIGHTSHIFT_MODEL_NAME": model_name, "NIGHTSHIFT_SERVER_TOKEN": TOKEN,
               "NIGHTSHIFT_SERVER_MAX_ROWS": "500", **env}
    proc = subprocess.Popen([sys.executable, "-m", "deployments.server", "--port", str(port)], env=environ,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until_ok(proc, f"{url}/ready", log, 120, "model server")
    return Server(url, model_name, proc, log)


def wait_until_ok(proc: subprocess.Popen, url: str, log: Path, timeout: float, what: str) -> None:
    """Poll `url` until it answers 200; kill `proc` and raise with its log's tail if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{what} not ready in {timeout:.0f} s: {log.read_text()[-3000:]}")


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
