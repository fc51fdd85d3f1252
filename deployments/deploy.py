"""`make deploy`: create the process work pool if missing, then `prefect --no-prompt deploy --all` from prefect.yaml.

Schedules come from the model catalogue (models.yaml): every catalogue model gets its own deployment of the
`model-night` flow, `model-night/<model>`, on the model's cron and time zone, with a drift trigger for that model
and one run at a time. prefect.yaml holds these entries generated from the committed models.yaml and the settings'
defaults (pool nightshift-process), so a bare `prefect deploy --all` works; this script regenerates them from the
current catalogue (NIGHTSHIFT_CATALOGUE_PATH) and pool (NIGHTSHIFT_WORK_POOL), deploys that copy through
`--prefect-file`, and pauses the deployments of models that left the catalogue. Last, the notification automations
(deployments/notify.py: a failed night, missing data, promotions, ...) through NIGHTSHIFT_NOTIFY_BLOCK, or "off".
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nightshift.settings import PROJECT_ROOT, Settings, get_settings

if TYPE_CHECKING:
    from tasks.catalogue.schema import Catalogue

PREFECT_FILE = "prefect.yaml"
MODEL_NIGHT_FLOW = "model-night"
GENERATED_TAG = "catalogue-model"  # marks the deployments generated from models.yaml (replaced on every render)


def load_config(project_dir: Path = PROJECT_ROOT) -> dict[str, Any]:
    """prefect.yaml as written."""
    import yaml

    return yaml.safe_load((project_dir / PREFECT_FILE).read_text())


def catalogue_deployments(catalogue: Catalogue, pool: str) -> list[dict[str, Any]]:
    """One scheduled `model-night` deployment per catalogue model (a disabled one: schedule and trigger off)."""
    return [{
        "name": m.name,
        "description": f"{m.name}'s night, every night on its catalogue schedule ({m.schedule.cron}, "
                       f"{m.schedule.timezone}), and when a monitor run reports drift for it. Generated from "
                       "models.yaml by `make deploy`.",
        "entrypoint": "flows.model_night:model_night",
        "work_pool": {"name": pool},
        "tags": ["nightshift", "catalogue", GENERATED_TAG],
        "parameters": {"params": {"model_name": m.name}},
        "enforce_parameter_schema": True,
        "schedules": [{"cron": m.schedule.cron, "timezone": m.schedule.timezone, "active": m.enabled}],
        # One night of a model at a time: a drift run arriving during the scheduled one waits for it.
        "concurrency_limit": {"limit": 1, "collision_strategy": "ENQUEUE"},
        "triggers": [_drift_trigger(m.name, m.enabled)],
    } for m in catalogue.models]


def _drift_trigger(name: str, enabled: bool) -> dict[str, Any]:
    """The monitor flow's drift event for `name` starts its night with reason drift (a burst: one run per 10 min)."""
    return {
        "type": "event", "name": f"{name}-on-drift", "enabled": enabled,
        "description": f"Start {name}'s night when a monitor run reports drift (bursts collapse to one run).",
        "match": {"prefect.resource.id": f"nightshift.model.{name}"}, "expect": ["nightshift.drift.detected"],
        "posture": "Reactive", "threshold": 1, "within": 600,
        # A single "{{ expr }}" renders as native JSON (float, list); trigger parameters replace the deployment's.
        "parameters": {"params": {"model_name": name, "reason": "drift", "trigger": {
            "event": "{{ event.event }}", "event_id": "{{ event.id | string }}",
            "occurred": "{{ event.occurred.isoformat() }}",
            "model_version": "{{ event.resource.get('nightshift.model.version') }}",
            "drift_share": "{{ event.payload.drift_share | default(none) }}",
            "drifted_columns": "{{ event.payload.drifted_columns | default([]) }}"}}},
    }


def render(config: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A copy of prefect.yaml's contents with the settings' work pool and the catalogue's deployments regenerated.

    Rendering with the default settings and the committed models.yaml gives back the file unchanged (tests check it).
    """
    from tasks.catalogue.schema import load_catalogue

    config = copy.deepcopy(config)
    kept = [d for d in config["deployments"] if GENERATED_TAG not in (d.get("tags") or [])]
    for deployment in kept:
        if isinstance(deployment.get("work_pool"), dict):
            deployment["work_pool"]["name"] = settings.work_pool
    config["deployments"] = kept + catalogue_deployments(load_catalogue(settings.catalogue_path), settings.work_pool)
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
    from tasks.catalogue.schema import load_catalogue

    for name in pause_removed_models({m.name for m in load_catalogue(settings.catalogue_path).models}):
        print(f"paused deployment {MODEL_NIGHT_FLOW}/{name}: model '{name}' is no longer in the catalogue")
    from deployments.notify import configure_notifications

    print(configure_notifications(settings))  # automations telling a person (NIGHTSHIFT_NOTIFY_BLOCK), or "off"


def pause_removed_models(names: set[str]) -> list[str]:
    """Pause generated model-night deployments whose model left the catalogue (kept, with their runs, for history)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags, FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        stale = [d for d in client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[MODEL_NIGHT_FLOW])),
            deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[GENERATED_TAG])))
            if d.name not in names and not d.paused]
        for deployment in stale:
            client.pause_deployment(deployment.id)
    return sorted(d.name for d in stale)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m deployments.deploy", description=__doc__.splitlines()[0])
    parser.add_argument("--pool-only", action="store_true", help="only create the work pool if it is missing")
    parser.add_argument("--print", action="store_true", help="print the deployments generated from the catalogue "
                                                             "(YAML for prefect.yaml) and exit")
    args = parser.parse_args()
    if args.print:
        import yaml

        from tasks.catalogue.schema import load_catalogue

        settings = get_settings()
        generated = catalogue_deployments(load_catalogue(settings.catalogue_path), settings.work_pool)
        print(yaml.safe_dump(generated, sort_keys=False, width=120))
        sys.exit(0)
    if "PREFECT_API_URL" not in os.environ:
        sys.exit("PREFECT_API_URL is not set: start `make server` and use `make deploy` (it points at 127.0.0.1:4200).")
    if args.pool_only:
        name = get_settings().work_pool
        print(f"work pool '{name}': {'created' if ensure_work_pool(name) else 'exists'}")
    else:
        deploy_all()
