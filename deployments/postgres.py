"""A local PostgreSQL for the scale path (Prefect server and MLflow on Postgres), from the machine's own binaries.

`make postgres` starts one under the state dir on 127.0.0.1 (trust auth, loopback only: a development database)
and prints the URLs to export; `make postgres-stop` stops it. Tests start their own in a temp dir the same way.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nightshift.errors import ConfigError


@dataclass(frozen=True)
class Postgres:
    """A running cluster: where its data lives and how to reach it."""

    data_dir: Path
    port: int
    user: str = "postgres"
    password: str | None = None

    def url(self, database: str, driver: str = "postgresql") -> str:
        """SQLAlchemy URL of one database (driver e.g. 'postgresql+asyncpg' for Prefect), with the password."""
        from urllib.parse import quote

        login = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}" if self.password else self.user
        return f"{driver}://{login}@127.0.0.1:{self.port}/{database}"


def pg_bin_dir() -> Path:
    """The newest PostgreSQL server binaries on the machine (Debian keeps them out of PATH)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if candidates:
        return candidates[-1].parent
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise ConfigError("PostgreSQL server binaries not found: install them (Debian: apt-get install postgresql)")


def _as_owner(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; as root, run it as the 'postgres' system user.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def start(data_dir: Path, port: int, databases: tuple[str, ...] = ("prefect", "mlflow"), user: str = "postgres",
          password: str | None = None) -> Postgres:
    """Initialise (first time) and start a cluster on 127.0.0.1:`port`, creating `databases` if missing.

    Without a password every local connection is trusted (a development database); with one, `user` is the
    superuser and every connection, local or TCP, must give the password (scram-sha-256)."""
    bin_dir = pg_bin_dir()
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(data_dir, "postgres", "postgres")
        data_dir.chmod(0o700)

    env = {**os.environ, "PGPASSWORD": password} if password else None

    def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(_as_owner(cmd), capture_output=True, text=True, timeout=120, env=env)
        if out.returncode != 0:
            log = (data_dir / "server.log").read_text()[-1500:] if (data_dir / "server.log").exists() else ""
            raise ConfigError(f"{Path(cmd[0]).name} failed ({out.returncode}): {out.stderr.strip()[-1500:]} {log}")
        return out

    if not (data_dir / "PG_VERSION").exists():
        if password:
            _initdb_with_password(run, bin_dir, data_dir, user, password)
        else:
            run([str(bin_dir / "initdb"), "-D", str(data_dir), "-A", "trust", "-U", user, "--no-sync"])
    options = f"-p {port} -k {data_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
    run([str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-o", options, "-l", str(data_dir / "server.log"), "-w", "start"])
    pg = Postgres(data_dir, port, user, password)
    for name in databases:
        exists = run([str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", "postgres", "-tAc",
                      f"SELECT 1 FROM pg_database WHERE datname = '{name}'"]).stdout.strip()
        if not exists:
            run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, name])
    return pg


def _initdb_with_password(run: Callable[[list[str]], object], bin_dir: Path, data_dir: Path, user: str,
                          password: str) -> None:
    """initdb with `user` as the superuser and password authentication for every connection; the password passes
    through a file only the cluster's owner can read, deleted right after."""
    with tempfile.NamedTemporaryFile("w", prefix="nightshift-pw-", delete=False) as handle:
        handle.write(password + "\n")
    try:
        if os.geteuid() == 0:
            shutil.chown(handle.name, "postgres", "postgres")
        run([str(bin_dir / "initdb"), "-D", str(data_dir), "-A", "scram-sha-256", "-U", user,
             f"--pwfile={handle.name}", "--no-sync"])
    finally:
        os.unlink(handle.name)


def stop(data_dir: Path) -> None:
    """Stop the cluster in `data_dir` (fast shutdown); no-op if it is not running."""
    pid_file = data_dir / "postmaster.pid"
    if pid_file.exists():
        subprocess.run(_as_owner([str(pg_bin_dir() / "pg_ctl"), "-D", str(data_dir.resolve()), "-m", "fast", "-w",
                                  "stop"]), check=False, capture_output=True, timeout=60)


if __name__ == "__main__":
    from nightshift.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m deployments.postgres", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--data-dir", type=Path, default=get_settings().state_dir / "postgres")
    args = parser.parse_args()
    if args.action == "stop":
        stop(args.data_dir)
        sys.exit(0)
    cluster = start(args.data_dir, args.port)
    print(f"export PREFECT_API_DATABASE_CONNECTION_URL={cluster.url('prefect', 'postgresql+asyncpg')}")
    print(f"export NIGHTSHIFT_MLFLOW_TRACKING_URI={cluster.url('mlflow')}  # needs psycopg2-binary in the venv")
