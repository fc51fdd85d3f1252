"""`make deploy`: create the process work pool if missing, then `prefect --no-prompt deploy --all` from prefect.yaml.

The {{ $NIGHTSHIFT_* }} placeholders in prefect.yaml (pool, cron, time zone, project dir) are filled from the
settings, so the schedule has one source: NIGHTSHIFT_NIGHTLY_CRON / NIGHTSHIFT_SCHEDULE_TIMEZONE.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from nightshift.settings import PROJECT_ROOT, Settings, get_settings


def deploy_env(settings: Settings, project_dir: Path = PROJECT_ROOT) -> dict[str, str]:
    """The environment prefect.yaml's placeholders are read from (on top of the current one)."""
    return {**os.environ, "NIGHTSHIFT_PROJECT_DIR": str(project_dir.resolve()),
            "NIGHTSHIFT_WORK_POOL": settings.work_pool, "NIGHTSHIFT_NIGHTLY_CRON": settings.nightly_cron,
            "NIGHTSHIFT_SCHEDULE_TIMEZONE": settings.schedule_timezone}


def ensure_work_pool(name: str) -> bool:
    """Create a `process` work pool called `name` unless it exists; True if it was created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return False
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(
                name=name, type="process", description="nightshift flows as local processes (make worker)",
                base_job_template=ProcessWorker.get_default_base_job_template()))
            return True


def deploy_all(settings: Settings | None = None, project_dir: Path = PROJECT_ROOT) -> None:
    """Pool, then every deployment in prefect.yaml; raises CalledProcessError with Prefect's output on failure."""
    settings = settings or get_settings()
    if ensure_work_pool(settings.work_pool):
        print(f"created work pool '{settings.work_pool}' (type process)")
    subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], cwd=project_dir,
                   env=deploy_env(settings, project_dir), check=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m deployments.deploy", description=__doc__.splitlines()[0])
    parser.add_argument("--pool-only", action="store_true", help="only create the work pool if it is missing")
    args = parser.parse_args()
    if "PREFECT_API_URL" not in os.environ:
        sys.exit("PREFECT_API_URL is not set: start `make server` and use `make deploy` (it points at 127.0.0.1:4200).")
    if args.pool_only:
        name = get_settings().work_pool
        print(f"work pool '{name}': {'created' if ensure_work_pool(name) else 'exists'}")
    else:
        deploy_all()
