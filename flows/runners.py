"""The task runner flows declare: a placeholder that picks the settings' runner when each run starts, not at import."""

from __future__ import annotations

from typing import Any

from prefect.task_runners import TaskRunner

from nightshift.runners import task_runner
from nightshift.settings import get_settings


class SettingsTaskRunner(TaskRunner[Any]):
    """Resolves to `nightshift.runners.task_runner(get_settings())` (threads or Dask) when a flow run starts.

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
