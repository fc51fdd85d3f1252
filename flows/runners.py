"""Task runners: threads on a laptop, Dask (local cluster or a scheduler) to scale out, chosen when each run starts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.task_runners import TaskRunner

from nightshift.settings import Settings, get_settings


def task_runner(settings: Settings | None = None) -> TaskRunner:
    """ThreadPoolTaskRunner, or prefect-dask's DaskTaskRunner when NIGHTSHIFT_TASK_RUNNER=dask."""
    settings = settings or get_settings()
    if settings.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if settings.dask_address:
            return DaskTaskRunner(address=settings.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": settings.task_workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None,
                                              "host": "127.0.0.1", "env": _api_env()})
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=settings.task_workers)


def _api_env() -> dict[str, str]:
    """The Prefect API this process uses, for local Dask workers: on the ephemeral server each worker would otherwise
    start a temporary server of its own (~20 CPU s inside a CV search on 2 cores, benchmarks/hpsearch.py)."""
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return {}  # the workers inherit it from the environment or the profile
    from prefect.client.orchestration import get_client

    return {"PREFECT_API_URL": str(get_client(sync_client=True).api_url)}  # the ephemeral server already running


class SettingsTaskRunner(TaskRunner[Any]):
    """Resolves to `task_runner(get_settings())` (threads or Dask) when a flow run starts.

    Prefect gives every flow run its own copy of the flow's runner through `duplicate()`, for direct calls, subflows
    and deployment runs alike, so the choice follows NIGHTSHIFT_TASK_RUNNER at run time (a deployment's job
    variables included) while `flow.with_options(task_runner=...)` still overrides it.
    """

    def duplicate(self) -> TaskRunner[Any]:  # type: ignore[override]  # a concrete runner, not another placeholder
        """The runner the settings choose now: a fresh ThreadPoolTaskRunner or DaskTaskRunner."""
        return task_runner(get_settings())

    def submit(self, task: Any, parameters: dict[str, Any], wait_for: Any = None, dependencies: Any = None) -> Any:
        """Never called: flow runs submit to the runner `duplicate()` returned."""
        raise RuntimeError("SettingsTaskRunner only chooses a task runner; submit to the one duplicate() returns.")


class NightTaskRunner(SettingsTaskRunner):
    """Threads for a night's own tasks (model-night, nightly): a Dask cluster (NIGHTSHIFT_TASK_RUNNER=dask) is started
    only around the challenger's CV search (`search_runner`), not on every night, most of which train nothing."""

    def duplicate(self) -> TaskRunner[Any]:  # type: ignore[override]
        """A fresh ThreadPoolTaskRunner of NIGHTSHIFT_TASK_WORKERS threads."""
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=get_settings().task_workers)


@contextmanager
def search_runner(current: TaskRunner[Any]) -> Iterator[TaskRunner[Any]]:
    """The runner a CV search maps its candidates on: the flow run's own (the train flow's follows the settings),
    or, when the settings ask for Dask and the run is on threads (a night), a Dask runner for the search only."""
    settings = get_settings()
    if settings.task_runner != "dask" or type(current).__name__ == "DaskTaskRunner":
        yield current
        return
    with task_runner(settings) as runner:
        yield runner
