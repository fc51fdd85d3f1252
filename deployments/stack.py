"""`make stack` / `make stack-stop`: the production-like stack on this machine, every part a real process on loopback.

PostgreSQL (the machine's own binaries, password auth) under a Prefect server with basic auth and an MLflow tracking
server with its basic-auth app (backend store on PostgreSQL, artifacts proxied by the server into a local artifact
root); `make deploy`'s work pool and deployments; N process workers; the model server with its token.

Credentials come from the environment (PREFECT_SERVER_API_AUTH_STRING, MLFLOW_TRACKING_USERNAME,
MLFLOW_TRACKING_PASSWORD, NIGHTSHIFT_SERVER_TOKEN, NIGHTSHIFT_STACK_PG_PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY),
else from `<state dir>/stack/credentials.env` (git-ignored, mode 0600), where any one missing is generated on the
first start and kept (PostgreSQL and MLflow's user store remember them). While the stack runs,
`<state dir>/stack/client.env` holds what a client needs (URLs and credentials): `make demo`, `make deploy`,
`make worker`, `make serve` and `make serve-flows` read it, so they run against the stack; `make stack-stop` removes it and
they are back on the embedded defaults. Logs: `<state dir>/stack/logs/`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from deployments import postgres
from nightshift.errors import ConfigError
from nightshift.settings import PROJECT_ROOT

USER = "nightshift"
SECRETS = {  # credential -> how a missing one is made
    "PREFECT_SERVER_API_AUTH_STRING": lambda: f"{USER}:{secrets.token_urlsafe(18)}",
    "MLFLOW_TRACKING_USERNAME": lambda: USER,
    "MLFLOW_TRACKING_PASSWORD": lambda: secrets.token_urlsafe(18),
    "NIGHTSHIFT_SERVER_TOKEN": lambda: secrets.token_urlsafe(24),
    "NIGHTSHIFT_STACK_PG_PASSWORD": lambda: secrets.token_urlsafe(18),
    "MLFLOW_FLASK_SERVER_SECRET_KEY": lambda: secrets.token_urlsafe(32),
}
DATABASES = ("prefect", "mlflow", "mlflow_auth")
START_TIMEOUT = 180.0  # first start: PostgreSQL initdb, Prefect's and MLflow's migrations
STOP_GRACE = 10.0  # the 3.9 process worker may ignore SIGTERM for longer: then SIGKILL


@dataclass(frozen=True)
class StackConfig:
    """Where the stack keeps its files, its ports and how many workers; `env` goes to workers and the model server
    (e.g. another catalogue)."""

    state_dir: Path
    pg_port: int = 5433
    prefect_port: int = 4200
    mlflow_port: int = 5000
    server_port: int = 8000
    workers: int = 2
    worker_limit: int | None = None  # flow runs at once per worker (None: Prefect's default, unbounded)
    pool: str = "nightshift-process"
    deploy: bool = True  # `make deploy` on the stack (pool, prefect.yaml's and the catalogue's deployments)
    model_server: bool = True
    env: dict[str, str] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.state_dir / "stack"

    @property
    def data_dir(self) -> Path:
        """The state dir of the stack's clients (landed files, reports, served traffic): apart from the embedded
        defaults' (`state_dir`), so a demo on the stack and one on the defaults never mix their weeks."""
        return self.home / "state"

    @property
    def prefect_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def server_url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


def credentials(home: Path) -> dict[str, str]:
    """Each credential from the environment, else the credentials file; missing ones generated and kept there."""
    path = home / "credentials.env"
    stored = read_env_file(path) if path.exists() else {}
    creds = {k: os.environ.get(k) or stored.get(k) or make() for k, make in SECRETS.items()}
    if ":" not in creds["PREFECT_SERVER_API_AUTH_STRING"]:
        raise ConfigError("PREFECT_SERVER_API_AUTH_STRING must be 'user:password'")
    if creds != stored:
        write_env_file(path, creds, "credentials of the stack (make stack); never commit them")
    return creds


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines ('export ' and comments allowed) as a dict."""
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip().removeprefix("export ").strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            pairs[key.strip()] = value.strip().strip("'\"")
    return pairs


def write_env_file(path: Path, values: dict[str, str], comment: str) -> None:
    """An env file only its owner can read (a shell can `set -a; . file`)."""
    import shlex

    path.parent.mkdir(parents=True, exist_ok=True)
    body = f"# {comment}\n" + "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(body)
    path.chmod(0o600)


def client_env(cfg: StackConfig, creds: dict[str, str]) -> dict[str, str]:
    """What a client of the stack needs: Prefect's API and auth, MLflow's server and login, the model server."""
    env = {
        "PREFECT_API_URL": f"{cfg.prefect_url}/api",
        "PREFECT_API_AUTH_STRING": creds["PREFECT_SERVER_API_AUTH_STRING"],
        "PREFECT_HOME": str((cfg.home / "prefect").resolve()),  # shared result storage of this machine's runs
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "NIGHTSHIFT_MLFLOW_TRACKING_URI": cfg.mlflow_url,
        "MLFLOW_TRACKING_USERNAME": creds["MLFLOW_TRACKING_USERNAME"],
        "MLFLOW_TRACKING_PASSWORD": creds["MLFLOW_TRACKING_PASSWORD"],
        "NIGHTSHIFT_WORK_POOL": cfg.pool,
        "NIGHTSHIFT_STATE_DIR": str(cfg.data_dir.resolve()),
        "NIGHTSHIFT_STACK_CLIENT_ENV": str((cfg.home / "client.env").resolve()),  # for hints: how to join the stack
    }
    if cfg.model_server:
        env |= {"NIGHTSHIFT_SERVER_URL": cfg.server_url, "NIGHTSHIFT_SERVER_TOKEN": creds["NIGHTSHIFT_SERVER_TOKEN"]}
    return env | cfg.env


def _base_env() -> dict[str, str]:
    """This process' environment without Prefect/MLflow settings of another setup (the stack sets its own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_TRACKING", "NIGHTSHIFT_"))
            } | {"PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}


@dataclass
class Running:
    """The started processes (name -> pid) and where to reach the stack; kept in `<home>/stack.json`."""

    home: Path
    pids: dict[str, int] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    pg_dir: str = ""

    def save(self) -> None:
        (self.home / "stack.json").write_text(json.dumps(
            {"pids": self.pids, "urls": self.urls, "pg_dir": self.pg_dir}, indent=2))

    @classmethod
    def load(cls, home: Path) -> Running | None:
        path = home / "stack.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return cls(home, data["pids"], data["urls"], data.get("pg_dir", ""))

    def alive(self) -> list[str]:
        return [name for name, pid in self.pids.items() if _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return True


def _spawn(name: str, cmd: list[str], env: dict[str, str], logs: Path, running: Running) -> subprocess.Popen:
    """Start one part in its own session (stop() signals its whole group), output to `logs/<name>.log`."""
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=PROJECT_ROOT, start_new_session=True)
    running.pids[name] = proc.pid
    running.save()
    return proc


def _wait_ready(name: str, url: str, proc: subprocess.Popen, logs: Path, auth: tuple[str, str] | None = None,
                timeout: float = START_TIMEOUT) -> None:
    """Poll `url` until it answers 200; a part that exits or never answers fails with its log's tail."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if httpx.get(url, auth=auth, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    path = logs / f"{name}.log"
    tail = path.read_text(errors="replace")[-2000:] if path.exists() else ""
    why = f"exited {proc.returncode}" if proc.poll() is not None else f"no answer at {url} in {timeout:.0f} s"
    raise ConfigError(f"{name} did not start ({why}); its log ({path}) ends:\n{tail}")


def _mlflow_auth_config(cfg: StackConfig, pg: postgres.Postgres, creds: dict[str, str]) -> Path:
    """MLflow's basic-auth config: users in PostgreSQL, the stack's login its admin, no access without a login."""
    path = cfg.home / "mlflow-auth.ini"
    body = ("[mlflow]\ndefault_permission = READ\n"
            f"database_uri = {pg.url('mlflow_auth', 'postgresql+psycopg')}\n"
            f"admin_username = {creds['MLFLOW_TRACKING_USERNAME']}\n"
            f"admin_password = {creds['MLFLOW_TRACKING_PASSWORD']}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "auth_cache_ttl_seconds = 60\n")  # PBKDF2 once a minute per login, not once per request
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(body)
    return path


def start(cfg: StackConfig, log=print) -> Running:
    """Start every part in order, each waited for; a failing part stops the ones already started."""
    home = cfg.home
    home.mkdir(parents=True, exist_ok=True)
    if (running := Running.load(home)) is not None:
        if running.alive():
            raise ConfigError(f"a stack is already running from {home} ({', '.join(running.alive())}): "
                              "make stack-stop first")
        stop(cfg.state_dir, log=lambda *_: None)  # leftovers of a machine restart: clean state files
    creds = credentials(home)
    running, logs = Running(home), home / "logs"
    try:
        _start_parts(cfg, creds, running, logs, log)
    except BaseException:
        stop(cfg.state_dir, log=lambda *_: None)
        raise
    write_env_file(home / "client.env", client_env(cfg, creds), "the running stack, for clients (make stack)")
    return running


def _start_parts(cfg: StackConfig, creds: dict[str, str], running: Running, logs: Path, log) -> None:
    home, bin_dir = cfg.home, Path(sys.executable).parent
    pg_dir = home / "postgres"
    log(f"PostgreSQL on 127.0.0.1:{cfg.pg_port} ({pg_dir}) ...")
    pg = postgres.start(pg_dir, cfg.pg_port, DATABASES, user=USER, password=creds["NIGHTSHIFT_STACK_PG_PASSWORD"])
    running.pg_dir = str(pg_dir.resolve())
    running.save()
    client = client_env(cfg, creds)
    base = _base_env()
    prefect_env = base | {
        "PREFECT_HOME": client["PREFECT_HOME"], "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": pg.url("prefect", "postgresql+asyncpg"),
        "PREFECT_SERVER_API_AUTH_STRING": creds["PREFECT_SERVER_API_AUTH_STRING"],
        "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_UI_API_URL": f"{cfg.prefect_url}/api"}
    log(f"Prefect server on {cfg.prefect_url} (basic auth) ...")
    proc = _spawn("prefect-server", [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                     str(cfg.prefect_port)], prefect_env, logs, running)
    user, _, password = creds["PREFECT_SERVER_API_AUTH_STRING"].partition(":")
    _wait_ready("prefect-server", f"{cfg.prefect_url}/api/health", proc, logs, auth=(user, password))

    log(f"MLflow tracking server on {cfg.mlflow_url} (basic auth, PostgreSQL, artifacts in {home / 'mlartifacts'}) ...")
    mlflow_env = base | {"MLFLOW_AUTH_CONFIG_PATH": str(_mlflow_auth_config(cfg, pg, creds)),
                         "MLFLOW_FLASK_SERVER_SECRET_KEY": creds["MLFLOW_FLASK_SERVER_SECRET_KEY"],
                         # No GenAI job runners (huey consumers: 11 more processes, ~1.5 GB): nightshift uses none.
                         "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = _spawn("mlflow-server", [
        str(bin_dir / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
        "--port", str(cfg.mlflow_port), "--workers", "2",
        "--backend-store-uri", pg.url("mlflow", "postgresql+psycopg"),
        "--artifacts-destination", str((home / "mlartifacts").resolve()), "--serve-artifacts",
    ], mlflow_env, logs, running)
    _wait_ready("mlflow-server", f"{cfg.mlflow_url}/health", proc, logs)

    env = base | client
    if cfg.deploy:
        log(f"work pool {cfg.pool} and deployments (make deploy) ...")
        out = subprocess.run([sys.executable, "-m", "deployments.deploy"], env=env, cwd=PROJECT_ROOT,
                             capture_output=True, text=True, timeout=600, check=False)
        (logs / "deploy.log").write_text(out.stdout + out.stderr)
        if out.returncode != 0:
            raise ConfigError(f"deploy on the stack failed ({out.returncode}): {(out.stdout + out.stderr)[-2000:]}")
    for i in range(1, cfg.workers + 1):
        limit = ["--limit", str(cfg.worker_limit)] if cfg.worker_limit else []
        _spawn(f"worker-{i}", [str(bin_dir / "prefect"), "worker", "start", "--pool", cfg.pool, "--name",
                               f"{cfg.pool}-{i}", *limit], env, logs, running)
    log(f"{cfg.workers} process worker(s) on pool {cfg.pool}")
    if cfg.model_server:
        log(f"model server on {cfg.server_url} (token) ...")
        proc = _spawn("model-server", [sys.executable, "-m", "serving.server", "--port", str(cfg.server_port)],
                      env, logs, running)
        _wait_ready("model-server", f"{cfg.server_url}/health", proc, logs)
    running.urls = {"Prefect UI": cfg.prefect_url, "MLflow UI": cfg.mlflow_url,
                    **({"model server": cfg.server_url} if cfg.model_server else {})}
    running.save()


def _tree(pid: int) -> list[int]:
    """`pid`'s live descendants, deepest first, then `pid` (a worker's flow-run processes sit in their own session)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        children = proc.children(recursive=True)
    except psutil.Error:
        return []
    return [c.pid for c in reversed(children)] + [pid]


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop(state_dir: Path, log=print) -> list[str]:
    """Stop every part (workers and their flow runs first, PostgreSQL last); names of what was running."""
    home = state_dir / "stack"
    running = Running.load(home)
    if running is None:
        log("no stack running")
        return []
    was = running.alive()
    order = sorted(running.pids, key=lambda n: (not n.startswith("worker"), n != "model-server", n))
    trees = {name: _tree(running.pids[name]) for name in order}
    for name in order:
        _signal(trees[name], signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    while time.monotonic() < deadline and any(_alive(p) for t in trees.values() for p in t):
        time.sleep(0.2)
    for name in order:
        _signal([p for p in trees[name] if _alive(p)], signal.SIGKILL)
    if running.pg_dir:
        postgres.stop(Path(running.pg_dir))
    for name in ("stack.json", "client.env"):
        (home / name).unlink(missing_ok=True)
    log(f"stopped: {', '.join(was) or 'nothing was running'}{' and PostgreSQL' if running.pg_dir else ''}")
    return was


def describe(cfg: StackConfig, running: Running) -> str:
    """Where each UI is and how to log in (the secrets stay in their file)."""
    creds = cfg.home / "credentials.env"
    lines = [f"{name:<14} {url}" for name, url in running.urls.items()]
    lines += [(f"logins         {creds} (Prefect UI: the PREFECT_SERVER_API_AUTH_STRING; MLflow: "
               "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)"),
              f"clients        {cfg.home / 'client.env'}: make demo, deploy, worker, serve use it while the stack runs",
              f"logs           {cfg.home / 'logs'}",
              "stop           make stack-stop"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from nightshift.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m deployments.stack", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--state-dir", type=Path, default=get_settings().state_dir)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("NIGHTSHIFT_STACK_WORKERS", "2")))
    for part, default in (("pg", 5433), ("prefect", 4200), ("mlflow", 5000), ("server", 8000)):
        parser.add_argument(f"--{part}-port", type=int, default=default)
    args = parser.parse_args(argv)
    if args.action == "stop":
        stop(args.state_dir)
        return 0
    cfg = StackConfig(args.state_dir, pg_port=args.pg_port, prefect_port=args.prefect_port,
                      mlflow_port=args.mlflow_port, server_port=args.server_port, workers=args.workers)
    if args.action == "status":
        running = Running.load(cfg.home)
        print(describe(cfg, running) if running and running.alive() else "no stack running")
        return 0
    running = Running.load(cfg.home)
    if running and running.pids and sorted(running.alive()) == sorted(running.pids):
        print("The stack is already running:\n" + describe(cfg, running))
        return 0
    try:
        running = start(cfg)
    except ConfigError as exc:
        print(f"stack not started: {exc}", file=sys.stderr)
        return 2
    print("\nThe stack is up:\n" + describe(cfg, running))
    return 0


if __name__ == "__main__":
    sys.exit(main())
