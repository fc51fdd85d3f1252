"""The model catalogue: every mistake named by model and field before any work starts; a night's files resolved."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from nightshift.errors import ConfigError
from nightshift.settings import PROJECT_ROOT
from tasks.catalogue.schema import load_catalogue, resolve_files

BROKEN = """
models:
  - name: churn
    features: "data/{date:%Y-%m-%d}.parquet"
    label: churned
    labels: {source: "labels/{date:%Y-%m-%d}.csv", key: id, lag_dayz: 2}
  - name: churn
    features: data/fixed.parquet
    label: y
    estimator: {kind: random_forest, param_grid: {n_trees: [3]}}
    schedule: {cron: "0 25 * * *", timezone: Mars/Base}
  - features: "x/{day}.csv"
    label: y
    gate: {metric: roc}
"""


def test_the_bundled_catalogue_is_valid_and_has_two_models_on_different_data() -> None:
    catalogue = load_catalogue(PROJECT_ROOT / "models.yaml")
    assert len(catalogue.enabled) >= 2
    churn, fraud = catalogue.models[:2]
    assert churn.labels is not None and churn.labels.lag_days >= 1 and churn.labels.key == ["customer_id"]
    assert fraud.labels is None and churn.features != fraud.features and churn.label != fraud.label
    assert "customer_id" in churn.non_features and "event_date" in churn.non_features


def test_every_problem_is_named_by_model_and_field_at_once(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(BROKEN)
    with pytest.raises(ConfigError) as info:
        load_catalogue(path)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{path} is not a valid model catalogue (9 problem(s)):"
    expected = [
        "model 'churn': the name is listed 2 times; names must be unique",
        "model 'churn' (#1), field 'labels.lag_dayz': unknown key",
        "model 'churn' (#2), field 'features': template 'data/fixed.parquet' has no {date} placeholder",
        "model 'churn' (#2), field 'estimator': Estimator random_forest has no tunable hyper-parameter 'n_trees'",
        "model 'churn' (#2), field 'schedule.cron': cron '0 25 * * *' is not a valid 5-field expression",
        "model 'churn' (#2), field 'schedule.timezone': unknown time zone 'Mars/Base'",
        "model #3, field 'name': Field required",
        "model #3, field 'features': template 'x/{day}.csv' has unknown placeholder(s) {day}",
        "model #3, field 'gate.metric': Input should be 'roc_auc'",
    ]
    for want in expected:
        assert any(line.strip().startswith(want) for line in lines), (want, lines)


@pytest.mark.parametrize(("text", "message"), [
    (None, "No model catalogue at"),
    ("models: [", "is not valid YAML"),
    ("models: []", "field 'models': List should have at least 1 item"),
    ("- just a list", "the catalogue: Input should be a valid dictionary"),
    ("models:\n  - {name: a, features: 'f/{date:%Y}.csv', label: y, id_columns: [y]}",
     "label 'y' is also listed as an id, time or excluded column"),
    ("models:\n  - {name: a, features: 'f/{date:%Y}}.csv', label: y}", "is malformed"),
    ("models:\n  - {name: a, features: 'f/{date:%Y}.csv', label: y, schedule: {night_offset_days: -1}}",
     "model 'a' (#1), field 'schedule.night_offset_days': Input should be greater than or equal to 0"),
])
def test_unusable_files_say_why(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "models.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_catalogue(path)
    assert message in str(info.value)


def test_relative_templates_are_read_from_the_catalogues_folder(tmp_path: Path) -> None:
    (tmp_path / "models.yaml").write_text(
        "models:\n"
        "  - {name: a, features: 'data/{date:%Y-%m-%d}.csv', label: y,\n"
        "     labels: {source: 's3://bucket/labels/dt={date:%Y-%m-%d}/*.parquet', key: [id, day]}}\n"
        "  - {name: b, features: '{state_dir}/landing/{date:%Y%m%d}.parquet', label: y, enabled: false}\n")
    a, b = load_catalogue(tmp_path / "models.yaml").models
    assert a.features == f"{tmp_path}/data/{{date:%Y-%m-%d}}.csv"
    assert a.labels.source == "s3://bucket/labels/dt={date:%Y-%m-%d}/*.parquet" and a.labels.key == ["id", "day"]
    assert b.features == "{state_dir}/landing/{date:%Y%m%d}.parquet" and not b.enabled


def test_a_night_resolves_to_its_files(tmp_path: Path) -> None:
    night = date(2026, 11, 25)
    (tmp_path / "landing" / "2026" / "11" / "25").mkdir(parents=True)
    for part in ("b", "a"):
        (tmp_path / "landing" / "2026" / "11" / "25" / f"{part}.parquet").write_bytes(b"x")
    (tmp_path / "one-2026-11-25.csv").write_text("y\n1\n")
    resolved, files = resolve_files("{state_dir}/landing/{date:%Y/%m/%d}/*.parquet", night, tmp_path)
    assert resolved == f"{tmp_path}/landing/2026/11/25/*.parquet"
    assert [Path(f).name for f in files] == ["a.parquet", "b.parquet"]
    assert resolve_files(f"{tmp_path}/one-{{date:%Y-%m-%d}}.csv", night, tmp_path)[1] == [
        f"{tmp_path}/one-2026-11-25.csv"]
    resolved, files = resolve_files(f"{tmp_path}/one-{{date:%Y-%m-%d}}.csv", date(2026, 11, 26), tmp_path)
    assert files == [] and resolved.endswith("one-2026-11-26.csv")
    assert resolve_files("{state_dir}/landing/{date:%Y/%m/%d}/*.parquet", date(2026, 11, 26), tmp_path)[1] == []
