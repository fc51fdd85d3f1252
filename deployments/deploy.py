"""`make deploy`: create the process work pool if missing, then `prefect --no-prompt deploy --all` from prefect.yaml.

prefect.yaml holds the settings' defaults as literal values (pool nightshift-process, nightly at 0 2 * * * UTC), so a
bare `prefect deploy --all` works; this script deploys a copy of it with the current settings written in
(NIGHTSHIFT_WORK_POOL, NIGHTSHIFT_NIGHTLY_CRON, NIGHTSHIFT_SCHEDULE_TIMEZONE) through `--prefect-file`.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from nightshift.settings import PROJECT_ROOT, Settings, get_settings

PREFECT_FILE = "prefect.yaml"
SCHEDULED = "nightly"  # the deployment whose schedule NIGHTSHIFT_NIGHTLY_CRON / _SCHEDULE_TIMEZONE set


def load_config(project_dir: Path = PROJECT_ROOT) -> dict[str, Any]:
    """prefect.yaml as written."""
    import yaml

    return yaml.safe_load((project_dir / PREFECT_FILE).read_text())


def render(config: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A copy of prefect.yaml's contents with the settings' work pool (every deployment) and the nightly schedule.

    Rendering with the default settings gives back the file unchanged (tests/deployments check it).
    """
    config = copy.deepcopy(config)
    for deployment in config["deployments"]:
        if isinstance(deployment.get("work_pool"), dict):
            deployment["work_pool"]["name"] = settings.work_pool
        if deployment["name"] == SCHEDULED:
            for schedule in deployment.get("schedules") or []:
                schedule.update(cron=settings.nightly_cron, timezone=settings.schedule_timezone)
    return config


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


def write_prefect_file(settings: Settings, directory: Path, project_dir: Path = PROJECT_ROOT) -> Path:
    """prefect.yaml rendered with `settings`, written to `directory`; the file `prefect deploy --prefect-file` reads."""
    import yaml

    path = directory / PREFECT_FILE
    path.write_text(yaml.safe_dump(render(load_config(project_dir), settings), sort_keys=False))
    return path


def deploy_all(settings: Settings | None = None, project_dir: Path = PROJECT_ROOT) -> None:
    """Pool, then every deployment in prefect.yaml; raises CalledProcessError with Prefect's output on failure."""
    settings = settings or get_settings()
    if ensure_work_pool(settings.work_pool):
        print(f"created work pool '{settings.work_pool}' (type process)")
    with tempfile.TemporaryDirectory(prefix="nightshift-deploy-") as tmp:
        prefect_file = write_prefect_file(settings, Path(tmp), project_dir)
        # From the project root: entrypoints and the pull step's directory are where `prefect deploy` runs.
        subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file",
                        str(prefect_file)], cwd=project_dir, check=True)


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
