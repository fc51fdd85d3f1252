"""The task runner the settings choose: threads on a laptop, Dask (local cluster or a scheduler) to scale out."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nightshift.settings import Settings, get_settings

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner


def task_runner(settings: Settings | None = None) -> TaskRunner:
    """ThreadPoolTaskRunner, or prefect-dask's DaskTaskRunner when NIGHTSHIFT_TASK_RUNNER=dask."""
    settings = settings or get_settings()
    if settings.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if settings.dask_address:
            return DaskTaskRunner(address=settings.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": settings.task_workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None,
                                              "host": "127.0.0.1"})
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=settings.task_workers)
