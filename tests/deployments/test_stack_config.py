"""The stack's credentials: from the environment, else a file only its owner reads, generated once and kept."""

from __future__ import annotations

import os
from pathlib import Path

from deployments import stack


def test_credentials_come_from_the_environment_else_the_file(tmp_path: Path, monkeypatch) -> None:
    for key in stack.SECRETS:
        monkeypatch.delenv(key, raising=False)
    first = stack.credentials(tmp_path)
    assert set(first) == set(stack.SECRETS) and len(set(first.values())) == len(first)  # all generated, distinct
    assert stack.credentials(tmp_path) == first  # kept
    monkeypatch.setenv("NIGHTSHIFT_SERVER_TOKEN", "from-env")
    assert stack.credentials(tmp_path)["NIGHTSHIFT_SERVER_TOKEN"] == "from-env"
    assert os.stat(tmp_path / "credentials.env").st_mode & 0o077 == 0


def test_client_env_names_the_stack_and_its_logins(tmp_path: Path) -> None:
    cfg = stack.StackConfig(tmp_path, prefect_port=4300, mlflow_port=5100, server_port=8100)
    creds = {k: f"{k.lower()}-x" for k in stack.SECRETS} | {"PREFECT_SERVER_API_AUTH_STRING": "u:p"}
    env = stack.client_env(cfg, creds)
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4300/api" and env["PREFECT_API_AUTH_STRING"] == "u:p"
    assert env["NIGHTSHIFT_MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5100"
    assert env["NIGHTSHIFT_SERVER_URL"] == "http://127.0.0.1:8100"
    assert "NIGHTSHIFT_STACK_PG_PASSWORD" not in env and "MLFLOW_FLASK_SERVER_SECRET_KEY" not in env
    stack.write_env_file(tmp_path / "client.env", env, "test")
    assert stack.read_env_file(tmp_path / "client.env") == env
