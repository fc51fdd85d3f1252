"""The one-process alternative for laptops: `prefect.serve` every deployment in prefect.yaml, no work pool or worker.

Run `make serve-flows` (or `python -m deployments.serve`) with a Prefect server in PREFECT_API_URL. Schedules,
concurrency limits, parameters and triggers come from the same prefect.yaml that `make deploy` uses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nightshift.settings import PROJECT_ROOT, Settings, get_settings

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment


def deployment_specs(settings: Settings, project_dir: Path = PROJECT_ROOT) -> list[dict[str, Any]]:
    """prefect.yaml's deployments with the settings' pool and nightly schedule, as `make deploy` deploys them."""
    from deployments.deploy import load_config, render

    return render(load_config(project_dir), settings)["deployments"]


def runner_deployment(spec: dict[str, Any]) -> RunnerDeployment:
    """One prefect.yaml deployment as a RunnerDeployment for `prefect.serve`."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.deployments.runner import EntrypointType
    from prefect.events.schemas.deployment_triggers import DeploymentTriggerTypes
    from prefect.flows import load_flow_from_entrypoint
    from prefect.schedules import Cron
    from pydantic import TypeAdapter

    flow = load_flow_from_entrypoint(spec["entrypoint"])  # module paths: importable by Dask workers too
    schedules = [Cron(s["cron"], timezone=s.get("timezone"), active=s.get("active", True))
                 for s in spec.get("schedules") or []]
    limit = spec.get("concurrency_limit")
    adapter: TypeAdapter[Any] = TypeAdapter(DeploymentTriggerTypes)
    triggers = [adapter.validate_python({"name": f"{spec['name']}__automation_{i}", **t})
                for i, t in enumerate(spec.get("triggers") or [], start=1)]
    return flow.to_deployment(
        name=spec["name"], description=spec.get("description"), tags=spec.get("tags"),
        parameters=spec.get("parameters") or {}, enforce_parameter_schema=spec.get("enforce_parameter_schema", True),
        schedules=schedules or None, triggers=triggers or None,
        concurrency_limit=ConcurrencyLimitConfig(**limit) if isinstance(limit, dict) else limit,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def build(settings: Settings | None = None, project_dir: Path = PROJECT_ROOT) -> list[RunnerDeployment]:
    """Every deployment in prefect.yaml, ready to serve."""
    settings = settings or get_settings()
    return [runner_deployment(spec) for spec in deployment_specs(settings, project_dir)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m deployments.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="most flow runs at once (default: no limit)")
    args = parser.parse_args()
    sys.path.insert(0, str(PROJECT_ROOT))
    from prefect import serve

    serve(*build(), limit=args.limit)
