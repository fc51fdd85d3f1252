"""A real model server subprocess on a free loopback port, serving a champion from the session's registry."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import free_port, wait_until_ok

if TYPE_CHECKING:
    from tasks.registry.store import TrackingConfig

TOKEN = "test-token-" + uuid.uuid4().hex[:8]


@dataclass
class Server:
    url: str
    model_name: str
    process: subprocess.Popen
    log: Path


def start_server(model_name: str, log: Path, wait_for: str = "/ready", **env: str) -> Server:
    """The server on a free port, serving `model_name` alone unless `env` names a catalogue (never the project's),
    capturing traffic into the log's folder (`served/`) unless `env` says otherwise.

    It is up once `wait_for` answers 200: `/ready` needs the default model's champion, `/health` only start-up done.
    """
    port = free_port()
    environ = {**os.environ, "NIGHTSHIFT_MODEL_NAME": model_name, "NIGHTSHIFT_SERVER_TOKEN": TOKEN,
               "NIGHTSHIFT_SERVER_MAX_ROWS": "500", "NIGHTSHIFT_CATALOGUE_PATH": str(log.with_name("no-models.yaml")),
               "NIGHTSHIFT_SERVER_PROMPTS": "",  # nor the project's default prompts: a test names its own
               "NIGHTSHIFT_CAPTURE_DIR": str(log.with_name("served")),  # captured traffic next to the log
               **env}
    proc = subprocess.Popen([sys.executable, "-m", "serving.server", "--port", str(port)], env=environ,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until_ok(proc, f"{url}{wait_for}", log, 120, "model server")
    return Server(url, model_name, proc, log)


def register_servable(tracking: TrackingConfig, name: str, seed: int = 11, *, rows: int = 1_000,
                      broken: bool = False, drop: tuple[str, ...] = ()) -> str:
    """A new version of `name` (no alias): a small churn forest with the contract and reference the server loads;
    `broken`: a logistic regression whose probabilities are NaN (a candidate the smoke test must refuse); `drop`:
    demo columns left out (a version with another input schema)."""
    from tasks.data.contract import infer_contract
    from tasks.data.datasets import infer_features
    from tasks.data.demo import generate_demo
    from tasks.model.train import fit_pipeline
    from tasks.monitoring.drift import build_reference
    from tasks.registry.runs import CONTRACT_ARTIFACT, REFERENCE_ARTIFACT, log_training, start_run
    from tasks.registry.versions import register_model_version

    frame = generate_demo(rows, seed=seed).drop(columns=list(drop))
    spec = infer_features(frame, "churned")
    model = fit_pipeline(frame, spec, "logistic_regression" if broken else "random_forest",
                         {} if broken else {"n_estimators": 10, "max_depth": 4}, seed=seed)
    if broken:
        model.named_steps["model"].coef_[:] = float("nan")
    run_id = start_run(tracking, "servable")
    logged = log_training(tracking, run_id, params={}, metrics={}, datasets=[], model=model,
                             input_example=frame[spec.features].head(3),
                             artifacts={CONTRACT_ARTIFACT: infer_contract(frame, spec).model_dump(mode="json")},
                             frames={REFERENCE_ARTIFACT: build_reference(model, frame, spec.features, spec.label,
                                                                            min(500, rows // 4), 0)})
    return register_model_version(tracking, name, logged)


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
    from tasks.data.datasets import DatasetParams
    from tasks.registry.versions import move_champion

    name = f"srv-{uuid.uuid4().hex[:8]}"
    result = train(TrainParams(dataset=DatasetParams(source="demo", rows=3_000), model_name=name, cv_folds=2,
                               estimator=EstimatorParams(param_grid={"n_estimators": [30], "max_depth": [8]})))
    move_champion(tracking, name, result.model_version)
    return name


@pytest.fixture(scope="module")
def server(champion, tmp_path_factory):
    srv = start_server(champion, tmp_path_factory.mktemp("server") / "server.log")
    yield srv
    stop_server(srv)


def register_prompt(tracking: TrackingConfig, name: str, model: str = "fake-small", *, system: str = "",
                    template: str = "Ticket: {{ ticket }}", temperature: float = 0.0, max_tokens: int = 64,
                    response_format: str = "text") -> str:
    """A version of prompt `name` (no alias), registered the way llm-eval registers its best candidate."""
    from tasks.llm.config import LLMConfig
    from tasks.llm.evaluation import Candidate, register_candidate
    from tasks.llm.provider import summarize

    config = LLMConfig(model=model, system=system, template=template, temperature=temperature,
                       max_tokens=max_tokens, response_format=response_format)
    return register_candidate(tracking, name, Candidate(config=config, results=[], scores=[], stats=summarize([])))
