"""Test isolation: every run gets its own Prefect home, results dir, MLflow DB and state dir."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

# Must happen before anything imports prefect or mlflow: never touch the user's real state.
_TMP = Path(tempfile.mkdtemp(prefix="nightshift-tests-"))
for _key in [k for k in os.environ if k.startswith(("NIGHTSHIFT_", "PREFECT_", "MLFLOW_"))]:
    del os.environ[_key]
os.environ.update({
    "NIGHTSHIFT_STATE_DIR": str(_TMP / "state"),
    "PREFECT_HOME": str(_TMP / "prefect"),
    "PREFECT_PROFILES_PATH": str(_TMP / "prefect" / "profiles.toml"),  # else pyproject.toml's [tool.prefect] one
    "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(_TMP / "results"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "MLFLOW_TRACKING_URI": f"sqlite:///{_TMP / 'stray-mlflow.db'}",
    # One MLflow DB for the session (a new one costs ~2 s of migrations); tests use unique model names.
    "NIGHTSHIFT_MLFLOW_TRACKING_URI": f"sqlite:///{_TMP / 'mlflow' / 'mlflow.db'}",
    "NIGHTSHIFT_MLFLOW_ARTIFACT_LOCATION": (_TMP / "mlflow" / "artifacts").as_uri(),
    "NIGHTSHIFT_EXPERIMENT_NAME": "tests",
})
(_TMP / "prefect").mkdir(parents=True)
(_TMP / "mlflow").mkdir(parents=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def tmp_root() -> Path:
    """The session's private temp root (already holds the isolated state dirs)."""
    return _TMP


@pytest.fixture(scope="session")
def tracking():
    """The session's MLflow config, the same one the flows read from the environment."""
    from nightshift.settings import get_settings
    from tasks.registry.store import TrackingConfig

    return TrackingConfig.from_settings(get_settings())


@pytest.fixture
def model_name() -> str:
    """A registered-model name no other test uses."""
    return f"m_{uuid.uuid4().hex[:10]}.v1"  # odd characters on purpose: keys and paths must cope


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect API for the whole session (~20 s to start once)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


FAKE_OPENAI_KEY = "sk-nightshift-TESTKEY-7f3a9c1e5b"  # distinctive: tests grep outputs and logs for it


@pytest.fixture
def fake_openai(monkeypatch: pytest.MonkeyPatch):
    """A FakeOpenAI serving on loopback, with OPENAI_API_KEY/OPENAI_BASE_URL pointing at it and no proxy detour."""
    from cli.fake_openai import FakeOpenAI

    for key in ("OPENAI_CUSTOM_HEADERS", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_ADMIN_KEY", "OPENAI_LOG"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    fake = FakeOpenAI(default=lambda messages: f"echo: {messages[-1]['content']}")
    url, stop = fake.start()
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    yield fake
    stop()
