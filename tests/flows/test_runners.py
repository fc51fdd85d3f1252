"""The flows' task runner is chosen from the settings when a run starts, not when the module is imported."""

from __future__ import annotations

import pytest
from prefect import flow
from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner

from flows.runners import SettingsTaskRunner


def test_duplicate_follows_the_settings_of_the_moment(monkeypatch) -> None:
    from prefect_dask import DaskTaskRunner

    runner = SettingsTaskRunner()
    monkeypatch.setenv("NIGHTSHIFT_TASK_WORKERS", "3")
    threads = runner.duplicate()
    assert type(threads) is ThreadPoolTaskRunner and threads._max_workers == 3
    monkeypatch.setenv("NIGHTSHIFT_TASK_RUNNER", "dask")
    monkeypatch.setenv("NIGHTSHIFT_DASK_ADDRESS", "tcp://127.0.0.1:8786")
    dask = runner.duplicate()  # a runner object only: no cluster until a flow run enters it
    assert type(dask) is DaskTaskRunner and dask.address == "tcp://127.0.0.1:8786"
    with pytest.raises(RuntimeError, match="only chooses"):
        runner.submit(None, {})


@flow(task_runner=SettingsTaskRunner())
def _which_runner() -> str:
    return f"{type(FlowRunContext.get().task_runner).__name__}/{FlowRunContext.get().task_runner._max_workers}"


@pytest.mark.usefixtures("prefect_harness")
def test_a_flow_run_gets_the_runner_chosen_at_call_time_and_with_options_still_wins(monkeypatch) -> None:
    monkeypatch.setenv("NIGHTSHIFT_TASK_WORKERS", "3")
    assert _which_runner() == "ThreadPoolTaskRunner/3"
    monkeypatch.setenv("NIGHTSHIFT_TASK_WORKERS", "5")  # same imported flow, new settings
    assert _which_runner() == "ThreadPoolTaskRunner/5"
    assert _which_runner.with_options(task_runner=ThreadPoolTaskRunner(max_workers=7))() == "ThreadPoolTaskRunner/7"


def test_local_dask_workers_share_this_process_prefect_api(monkeypatch) -> None:
    """On the ephemeral server, local Dask workers get its URL rather than each starting a temporary server."""
    import prefect.client.orchestration as orchestration
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.runners import task_runner
    from nightshift.settings import Settings

    class Client:
        api_url = "http://127.0.0.1:8123/api/"

    monkeypatch.setattr(orchestration, "get_client", lambda sync_client=False: Client())
    with temporary_settings(updates={PREFECT_API_URL: None}):
        assert task_runner(Settings(task_runner="dask")).cluster_kwargs["env"] == {
            "PREFECT_API_URL": "http://127.0.0.1:8123/api/"}
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):  # a real server: inherited
        assert task_runner(Settings(task_runner="dask")).cluster_kwargs["env"] == {}


def test_a_night_runs_on_threads_and_starts_dask_only_around_a_search(monkeypatch) -> None:
    from flows import runners

    monkeypatch.setenv("NIGHTSHIFT_TASK_RUNNER", "dask")
    monkeypatch.setenv("NIGHTSHIFT_TASK_WORKERS", "3")
    night = runners.NightTaskRunner().duplicate()
    assert type(night) is ThreadPoolTaskRunner and night._max_workers == 3  # no cluster for a night that trains nothing
    entered: list[str] = []

    class FakeDask(ThreadPoolTaskRunner):
        def __enter__(self):
            entered.append("in")
            return super().__enter__()

        def __exit__(self, *exc):
            entered.append("out")
            return super().__exit__(*exc)

    monkeypatch.setattr(runners, "task_runner", lambda settings: FakeDask(max_workers=1))
    with runners.search_runner(night) as runner:
        assert type(runner) is FakeDask and entered == ["in"]
    assert entered == ["in", "out"]
    monkeypatch.setenv("NIGHTSHIFT_TASK_RUNNER", "threads")
    with runners.search_runner(night) as runner:
        assert runner is night  # threads: the search shares the night's runner
