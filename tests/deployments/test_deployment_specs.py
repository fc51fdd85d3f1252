"""prefect.yaml, its rendering with the settings (make deploy, serve-flows) and the UI forms it produces."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from deployments.deploy import load_config, render, write_prefect_file
from deployments.serve import build, deployment_specs
from nightshift.settings import PROJECT_ROOT, Settings

DEPLOYMENTS = {"nightly": "flows.nightly:nightly", "monitor": "flows.monitor:monitor", "train": "flows.train:train",
               "batch-predict": "flows.batch_predict:batch_predict", "rollback": "flows.rollback:rollback",
               "model-night": "flows.model_night:model_night", "fleet": "flows.fleet:fleet"}


def _schema(target: str) -> dict[str, Any]:
    import importlib

    from prefect.utilities.callables import parameter_schema

    module, name = target.split(":")
    return parameter_schema(getattr(importlib.import_module(module), name)).model_dump_for_openapi()


def _fields(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every property of the form and of its nested models, keyed 'Model.field'."""
    out = {f"<flow>.{k}": v for k, v in schema["properties"].items()}
    for model, definition in schema.get("definitions", {}).items():
        out.update({f"{model}.{k}": v for k, v in definition.get("properties", {}).items()})
    return out


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_every_form_field_has_a_title_and_a_description(deployment: str) -> None:
    fields = _fields(_schema(DEPLOYMENTS[deployment]))
    untitled = [k for k, v in fields.items() if not v.get("title") or not v.get("description")]
    assert not untitled, f"{deployment}: fields without title/description: {untitled}"


def test_choices_become_dropdowns_and_numbers_are_bounded() -> None:
    fields = _fields(_schema(DEPLOYMENTS["nightly"]))
    assert fields["EstimatorParams.kind"]["enum"] == ["random_forest", "logistic_regression", "hist_gradient_boosting"]
    assert set(fields["GateConfig.metric"]["enum"]) >= {"roc_auc", "accuracy"}
    assert (fields["NightlyParams.window"]["minimum"], fields["NightlyParams.window"]["maximum"]) == (1, 365)
    holdout = fields["NightlyParams.holdout_fraction"]
    assert (holdout["exclusiveMinimum"], holdout["exclusiveMaximum"]) == (0.05, 0.9)
    assert fields["NightlyParams.reason"]["anyOf"][0]["maxLength"] == 500
    assert fields["NightlyParams.model_name"]["anyOf"][0]["pattern"]
    rollback = _fields(_schema(DEPLOYMENTS["rollback"]))
    assert rollback["RollbackParams.reason"]["minLength"] == 3
    assert _schema(DEPLOYMENTS["rollback"])["required"] == ["params"]  # no silent default rollback


def test_prefect_yaml_deployments_and_their_schedule(tmp_path) -> None:
    specs = {s["name"]: s for s in deployment_specs(Settings(state_dir=tmp_path, work_pool="p1",
                                                             nightly_cron="30 3 * * 1-5",
                                                             schedule_timezone="America/New_York"))}
    assert set(specs) == set(DEPLOYMENTS)
    assert {s["entrypoint"] for s in specs.values()} == set(DEPLOYMENTS.values())
    assert all(s["work_pool"]["name"] == "p1" and s["enforce_parameter_schema"] for s in specs.values())
    night = specs["nightly"]
    assert night["schedules"] == [{"cron": "30 3 * * 1-5", "timezone": "America/New_York", "active": True}]
    assert night["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
    assert [s["name"] for s in specs.values() if s.get("schedules")] == ["nightly"]


def _default(field: str) -> Any:
    return Settings.model_fields[field].default


def test_prefect_yaml_holds_the_settings_defaults_so_a_bare_prefect_deploy_works() -> None:
    """`prefect deploy --all` reads prefect.yaml as written, so its literal values are the settings' defaults."""
    assert "{{ $" not in (PROJECT_ROOT / "prefect.yaml").read_text()  # Prefect keeps an unset {{ $VAR }} literally
    config = load_config()
    assert {d["work_pool"]["name"] for d in config["deployments"]} == {_default("work_pool")}
    [night] = [d for d in config["deployments"] if d["name"] == "nightly"]
    assert night["schedules"] == [{"cron": _default("nightly_cron"), "timezone": _default("schedule_timezone"),
                                   "active": True}]
    # make deploy with no NIGHTSHIFT_* set deploys exactly the file
    defaults = Settings(**{f: _default(f) for f in ("work_pool", "nightly_cron", "schedule_timezone")})
    assert render(config, defaults) == config


def test_make_deploy_writes_the_overrides_into_a_file_prefect_accepts(tmp_path) -> None:
    """The rendered copy differs from prefect.yaml only in pool, cron and time zone, and Prefect's loader takes it."""
    from prefect.cli.deploy._config import _load_deploy_configs_and_actions
    from rich.console import Console

    settings = Settings(work_pool="other", nightly_cron="30 3 * * *", schedule_timezone="Europe/Berlin")
    console = Console(record=True, width=200)
    configs, actions = _load_deploy_configs_and_actions(write_prefect_file(settings, tmp_path), console=console)
    assert not console.export_text().strip()  # Prefect skips a file it cannot validate, with only a warning
    rendered = {c["name"]: c for c in configs}
    original = {d["name"]: d for d in load_config()["deployments"]}
    assert set(rendered) == set(original) == set(DEPLOYMENTS)
    assert {c["work_pool"]["name"] for c in configs} == {"other"}
    assert [(s["cron"], s["timezone"]) for s in rendered["nightly"]["schedules"]] == [("30 3 * * *", "Europe/Berlin")]
    def rest(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k not in ("work_pool", "schedules")}

    assert all(rest(rendered[name]) == rest(original[name]) for name in original)  # trigger templates untouched too
    assert actions["pull"] == load_config()["pull"] and actions["build"] == load_config()["build"]


@pytest.mark.usefixtures("prefect_harness")  # step inputs are resolved through the Prefect API
def test_the_pull_step_changes_into_the_directory_prefect_deploy_ran_in(monkeypatch) -> None:
    """Prefect's step runner on prefect.yaml's build step, then the pull step templated as `prefect deploy` does."""
    import anyio
    from prefect.deployments.steps.core import run_steps
    from prefect.utilities.templating import apply_values

    config = load_config()
    monkeypatch.chdir(PROJECT_ROOT)
    outputs = anyio.run(run_steps, config["build"])
    assert apply_values(config["pull"], outputs, remove_notset=False) == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT_ROOT)}}]


def test_serve_builds_the_same_deployments(tmp_path) -> None:
    served = {d.name: d for d in build(Settings(state_dir=tmp_path))}
    assert set(served) == set(DEPLOYMENTS)
    [schedule] = served["nightly"].schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "UTC")
    assert served["nightly"].concurrency_limit == 1
    assert served["nightly"].concurrency_options.collision_strategy.value == "ENQUEUE"
    assert len(served["nightly"].triggers) == len(deployment_specs(Settings(state_dir=tmp_path))[0]["triggers"])


@pytest.mark.parametrize(("field", "value", "fragment"), [("schedule_timezone", "Mars/Olympus", "unknown time zone"),
                                                         ("nightly_cron", "0 2 * *", "needs 5 fields")])
def test_bad_schedule_settings_fail_early(field: str, value: str, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        Settings(**{field: value})
