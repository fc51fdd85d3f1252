"""prefect.yaml, its rendering with the settings (make deploy, serve-flows) and the UI forms it produces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from deployments.deploy import load_config, render, write_prefect_file
from deployments.serve import build, deployment_specs
from nightshift.settings import PROJECT_ROOT, Settings

DEPLOYMENTS = {"nightly": "flows.nightly:nightly", "monitor": "flows.monitor:monitor", "train": "flows.train:train",
               "batch-predict": "flows.batch_predict:batch_predict", "rollback": "flows.rollback:rollback",
               "model-night": "flows.model_night:model_night", "fleet": "flows.fleet:fleet",
               "llm-eval": "flows.llm_eval:llm_eval"}


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
    assert fields["EstimatorParams.kind"]["enum"] == ["random_forest", "logistic_regression", "hist_gradient_boosting",
                                                      "ridge"]
    assert set(fields["GateConfig.metric"]["enum"]) >= {"roc_auc", "accuracy"}
    assert (fields["NightlyParams.window"]["minimum"], fields["NightlyParams.window"]["maximum"]) == (1, 365)
    holdout = fields["NightlyParams.holdout_fraction"]
    assert (holdout["exclusiveMinimum"], holdout["exclusiveMaximum"]) == (0.05, 0.9)
    assert fields["NightlyParams.reason"]["anyOf"][0]["maxLength"] == 500
    assert fields["NightlyParams.model_name"]["anyOf"][0]["pattern"]
    rollback = _fields(_schema(DEPLOYMENTS["rollback"]))
    assert rollback["RollbackParams.reason"]["minLength"] == 3
    assert _schema(DEPLOYMENTS["rollback"])["required"] == ["params"]  # no silent default rollback


GENERATED = {"demo-churn": ("0 2 * * *", "UTC"), "demo-fraud": ("30 2 * * *", "Europe/Berlin")}  # models.yaml


def _catalogue(folder: Path) -> Path:
    """Two models: one on a weekday cron in New York, one disabled."""
    from tests.catalogues import two_demo_models, write_catalogue

    churn, fraud = two_demo_models("spec-")
    churn["schedule"] = {"cron": "30 3 * * 1-5", "timezone": "America/New_York"}
    fraud["enabled"] = False
    return write_catalogue(folder, [churn, fraud])


def test_every_catalogue_model_gets_its_own_scheduled_deployment(tmp_path) -> None:
    """make deploy's rendering: the settings' pool everywhere; one model-night deployment per catalogue model."""
    from tasks.catalogue.schema import load_catalogue

    churn, fraud = load_catalogue(_catalogue(tmp_path)).models
    settings = Settings(state_dir=tmp_path, work_pool="p1", catalogue_path=tmp_path / "models.yaml")
    specs = {s["name"]: s for s in deployment_specs(settings)}
    assert set(specs) == set(DEPLOYMENTS) | {churn.name, fraud.name}
    assert all(s["work_pool"]["name"] == "p1" and s["enforce_parameter_schema"] for s in specs.values())
    assert [n for n, s in specs.items() if s.get("schedules")] == [churn.name, fraud.name]  # the nightly: on demand
    for model, active in ((churn, True), (fraud, False)):  # a disabled model: listed, never scheduled or triggered
        spec = specs[model.name]
        assert spec["entrypoint"] == DEPLOYMENTS["model-night"]
        assert spec["parameters"] == {"params": {"model_name": model.name}}
        assert spec["schedules"] == [{"cron": model.schedule.cron, "timezone": model.schedule.timezone,
                                      "active": active}]
        assert spec["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
        [trigger] = spec["triggers"]
        assert trigger["match"] == {"prefect.resource.id": f"nightshift.model.{model.name}"}
        assert trigger["enabled"] is active and trigger["parameters"]["params"]["model_name"] == model.name
    assert specs[churn.name]["schedules"][0]["cron"] == "30 3 * * 1-5"
    assert not any(s.get("triggers") for n, s in specs.items() if n in DEPLOYMENTS)


def test_prefect_yaml_holds_the_settings_defaults_so_a_bare_prefect_deploy_works() -> None:
    """`prefect deploy --all` reads prefect.yaml as written: the pool default and models.yaml's deployments."""
    assert "{{ $" not in (PROJECT_ROOT / "prefect.yaml").read_text()  # Prefect keeps an unset {{ $VAR }} literally
    config = load_config()
    assert {d["work_pool"]["name"] for d in config["deployments"]} == {Settings.model_fields["work_pool"].default}
    scheduled = {d["name"]: [(s["cron"], s["timezone"]) for s in d["schedules"]]
                 for d in config["deployments"] if d.get("schedules")}
    assert scheduled == {name: [cron] for name, cron in GENERATED.items()}
    # make deploy with no NIGHTSHIFT_* set deploys exactly the file (edit models.yaml? `python -m deployments.deploy
    # --print` gives the entries to paste)
    assert render(config, Settings()) == config


def test_make_deploy_writes_the_overrides_into_a_file_prefect_accepts(tmp_path) -> None:
    """The rendered copy differs from prefect.yaml in pool and catalogue deployments, and Prefect's loader takes it."""
    from prefect.cli.deploy._config import _load_deploy_configs_and_actions
    from rich.console import Console

    settings = Settings(work_pool="other", catalogue_path=_catalogue(tmp_path))
    console = Console(record=True, width=200)
    configs, actions = _load_deploy_configs_and_actions(write_prefect_file(settings, tmp_path), console=console)
    assert not console.export_text().strip()  # Prefect skips a file it cannot validate, with only a warning
    rendered = {c["name"]: c for c in configs}
    original = {d["name"]: d for d in load_config()["deployments"]}
    assert set(rendered) - set(DEPLOYMENTS) == {m["name"] for m in yaml.safe_load(
        (tmp_path / "models.yaml").read_text())["models"]}
    assert set(original) - set(DEPLOYMENTS) == set(GENERATED)
    assert {c["work_pool"]["name"] for c in configs} == {"other"}

    def rest(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k != "work_pool"}

    assert all(rest(rendered[name]) == rest(original[name]) for name in DEPLOYMENTS)
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
    assert set(served) == set(DEPLOYMENTS) | set(GENERATED)
    for name, cron in GENERATED.items():
        [schedule] = served[name].schedules
        assert (schedule.schedule.cron, schedule.schedule.timezone) == cron
        assert served[name].concurrency_limit == 1
        assert served[name].concurrency_options.collision_strategy.value == "ENQUEUE"
        [trigger] = served[name].triggers
        assert trigger.match.model_dump()["prefect.resource.id"] == f"nightshift.model.{name}"
    assert not served["nightly"].schedules and not served["nightly"].triggers


def test_a_scheduled_night_is_its_start_date_in_the_zone_minus_the_offset(monkeypatch) -> None:
    """resolve_night inside a scheduled run: 00:30 UTC on the 26th is still the 25th in New York."""
    from datetime import date, datetime, timezone

    from prefect.runtime import flow_run

    from tasks.data.sources import resolve_night

    monkeypatch.setattr(flow_run, "get_id", lambda: "00000000-0000-0000-0000-000000000001")
    # a module __getattr__ attribute in prefect.runtime (getattr would ask the API): set in the module's dict
    monkeypatch.setitem(vars(flow_run), "scheduled_start_time", datetime(2026, 11, 26, 0, 30, tzinfo=timezone.utc))
    assert resolve_night(None, "UTC") == date(2026, 11, 26)
    assert resolve_night(None, "UTC", offset_days=1) == date(2026, 11, 25)
    assert resolve_night(None, "America/New_York") == date(2026, 11, 25)
    assert resolve_night(date(2026, 1, 2), "America/New_York", offset_days=1) == date(2026, 1, 2)  # given: as is
