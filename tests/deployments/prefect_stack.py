"""Real Prefect parts for integration tests: `prefect server start`, deploy from prefect.yaml, a process worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from nightshift.settings import PROJECT_ROOT
from tests.conftest import free_port, wait_until_ok

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def clean_env(**extra: str) -> dict[str, str]:
    """The test process' environment without its Prefect settings (the harness' must not leak), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_CLI_PROMPT": "false", **extra})
    return env


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL it if still alive after `grace` s (the 3.9 worker may ignore SIGTERM)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


@dataclass
class PrefectStack:
    """A Prefect server (and later a worker) started for one test module; stop() ends them by PID."""

    home: Path
    api_url: str
    env: dict[str, str]
    logs: Path
    database_url: str | None = None
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    def spawn(self, name: str, cmd: list[str], **extra_env: str) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("w")
        proc = subprocess.Popen(cmd, env={**self.env, **extra_env}, stdout=log, stderr=subprocess.STDOUT,
                                cwd=PROJECT_ROOT, start_new_session=True)
        self.processes.append(proc)
        return proc

    def cli(self, *args: str, timeout: float = 180) -> str:
        """Run `prefect <args>` against this server; returns stdout, raises with the output on failure."""
        out = subprocess.run([sys.executable, "-m", "prefect", *args], env=self.env, cwd=PROJECT_ROOT,
                             capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n"
                               f"{out.stderr[-3000:]}")
        return out.stdout

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call; a 503 (the SQLite server busy) is retried with backoff, as Prefect's own client does."""
        for attempt in range(8):
            response = httpx.request(method, f"{self.api_url}{path}", timeout=30, **kwargs)
            if response.status_code != 503:
                break
            time.sleep(0.5 * 2 ** min(attempt, 3))
        response.raise_for_status()
        return response.json() if response.content else None

    def deployment(self, full_name: str) -> dict[str, Any]:
        flow, name = full_name.split("/")
        return self.api("GET", f"/deployments/name/{flow}/{name}")

    def flow_runs(self, deployment_id: str) -> list[dict[str, Any]]:
        return self.api("POST", "/flow_runs/filter", json={
            "deployments": {"id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC", "limit": 50})

    def wait_for_run(self, run_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.api("GET", f"/flow_runs/{run_id}")
            if run["state_type"] in FINAL:
                return run
            time.sleep(1.0)
        raise TimeoutError(f"flow run {run_id} not finished after {timeout:.0f} s: {run['state_type']}; "
                           f"logs in {self.logs}")

    def stop(self) -> None:
        for proc in reversed(self.processes):
            stop_process(proc)


def start_stack(base: Path, database_url: str | None = None, **nightshift_env: str) -> PrefectStack:
    """`prefect server start` on a free loopback port with its own PREFECT_HOME (SQLite unless `database_url`)."""
    home, logs = base / "prefect-home", base / "logs"
    home.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    # The UI calls 127.0.0.1:4200 unless told where its API is.
    server_env = clean_env(PREFECT_HOME=str(home), PREFECT_SERVER_UI_API_URL=api_url,
                           PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false", **nightshift_env)
    if database_url:
        server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    stack = PrefectStack(home, api_url, clean_env(PREFECT_HOME=str(home), PREFECT_API_URL=api_url, **nightshift_env),
                         logs, database_url)
    log = (logs / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                             str(port)], env=server_env, stdout=log, stderr=subprocess.STDOUT, cwd=base,
                            start_new_session=True)
    stack.processes.append(proc)
    try:
        wait_until_ok(proc, f"{api_url}/health", logs / "server.log", 180, "prefect server")
    except RuntimeError:
        stack.stop()
        raise
    return stack


def deploy_and_start_worker(stack: PrefectStack, pool: str, *worker_args: str) -> None:
    """`python -m deployments.deploy` (= make deploy: pool + `prefect deploy --all`), then a process worker."""
    out = subprocess.run([sys.executable, "-m", "deployments.deploy"], env={**stack.env, "NIGHTSHIFT_WORK_POOL": pool},
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    (stack.logs / "deploy.log").write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        raise RuntimeError(f"deploy failed: {out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    stack.spawn("worker", [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
                           "--prefetch-seconds", "5", *worker_args])
