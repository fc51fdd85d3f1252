"""`make demo` (`python -m cli.demo`): the catalogue's demo week, planned from the calendar, told by real nights."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from cli.demo import CHURN, FRAUD, WEEK_NIGHTS, main, next_week, week_plan, world
from nightshift.settings import get_settings
from tasks.catalogue.schema import load_catalogue
from tasks.data.demo import DEMO_START, land_demo_night


def test_the_week_flips_each_world_once_and_back_the_next_week() -> None:
    plan = week_plan(0)
    assert [n.night for n in plan] == [DEMO_START + timedelta(days=d) for d in range(WEEK_NIGHTS)]
    assert [sorted(n.missing) for n in plan] == [[], [], [FRAUD], [], [], [], []]
    assert [world(FRAUD, n.night).concept for n in plan] == [0, 0, 0, 0, 1, 1, 1]
    assert [world(CHURN, n.night).concept for n in plan] == [0, 0, 1, 1, 1, 1, 1]
    assert [world(CHURN, n.night).covariate_shift for n in plan] == [0, 0, 0, 0, 0, 0, 1.0]
    second = week_plan(1)
    assert second[0].night == DEMO_START + timedelta(days=WEEK_NIGHTS) and "week 2 starts" in second[0].story
    assert [world(FRAUD, n.night).concept for n in second] == [1, 1, 1, 1, 0, 0, 0]
    assert [world(CHURN, n.night).concept for n in second] == [1, 1, 0, 0, 0, 0, 0]
    assert [n.night for n in week_plan(0, nights=3)] == [n.night for n in plan[:3]]


def test_each_run_takes_the_next_week_that_has_not_fully_landed(tmp_path: Path) -> None:
    models = [load_catalogue(get_settings().catalogue_path).get(name) for name in (CHURN, FRAUD)]
    last = DEMO_START + timedelta(days=WEEK_NIGHTS - 1)
    assert next_week(models, tmp_path) == 0
    land_demo_night(models[0], last, tmp_path, rows=20)
    assert next_week(models, tmp_path) == 0  # fraud's last night is missing: the week is run again
    land_demo_night(models[1], last, tmp_path, rows=20)
    assert next_week(models, tmp_path) == 1


def _table(out: str, model: str) -> list[dict[str, str]]:
    """One model's printed table as rows of {column: text} (cells folded over several lines joined again)."""
    text = out.split(f"\n{model} (", 1)[-1].split("Where to look")[0]
    text = re.split(r"\ndemo-\w+(?: \(|:)", text)[0]  # up to the next table (a model's night, its estimates)
    header: list[str] = []
    rows: list[list[str]] = []
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if line.startswith("┃"):
            header = [" ".join(p for p in pair if p) for pair in zip(header, cells)] if header else cells
        elif line.startswith("│") and re.fullmatch(r"\w{3} \d\d-\d\d", cells[0]):
            rows.append(cells)
        elif line.startswith("│") and rows:
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells)]
    return [dict(zip(header, r)) for r in rows]


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_harness")
def test_make_demo_runs_the_catalogues_week(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The real catalogue's demo models in a fresh state dir and MLflow store: the story happens, it is not printed."""
    from prefect.artifacts import Artifact

    from tasks.registry.audit import read_audit
    from tasks.registry.quality import monitored_metric
    from tasks.registry.store import TrackingConfig, client
    from tasks.registry.versions import CHAMPION, get_alias

    monkeypatch.setenv("NIGHTSHIFT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NIGHTSHIFT_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("NIGHTSHIFT_MLFLOW_ARTIFACT_LOCATION", (tmp_path / "artifacts").as_uri())
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "week 1 of the catalogue's demo models, 2026-01-01 .. 2026-01-07" in out and "Where to look" in out
    churn, fraud = _table(out, CHURN), _table(out, FRAUD)
    nights = [f"{n.night:%a %m-%d}" for n in week_plan(0)]
    assert [r["night"] for r in churn] == [r["night"] for r in fraud] == nights
    churn_actions, fraud_actions = ([r["action"].split(":")[0] for r in t] for t in (churn, fraud))
    # Churn's labels land two days late: nothing to gate on until night 4, which judges day 2 after training on day 1.
    assert churn_actions[:4] == ["no-labels"] * 3 + ["promoted"], churn
    assert churn[2]["landed"] == "6000 rows; labels of 01-01" and churn[2]["gated on"].startswith("judge 01-01;")
    assert churn[3]["gated on"] == "judge 01-02; train 01-01..01-01 (1 d)" and churn[3]["champion"] == "v1"
    # Its customers change on day 3: seen on night 5 (refused: nothing changed to learn from yet), learnt later.
    assert churn_actions[4] == "refused" and "performance degraded" in churn[4]["retrain because"], churn
    # v1 measures worse than chance on the changed days (ROC AUC ~0.37): the night says the live model is under its
    # floor, and the next challenger that is measurably better replaces it though it is still under the floor.
    assert "live model below the floor" in churn[4]["retrain because"], churn
    assert churn[5]["action"] == "promoted: both below the floor" and churn[5]["champion"] == "v3", churn
    assert churn[6]["action"] == "promoted", churn  # v4 meets the floor: a plain promotion
    # Fraud: labels inline (first model on night 2), feed down on night 3, world moves on night 5.
    assert fraud_actions[:4] == ["no-labels", "promoted", "no-data", "no-retrain"], fraud
    assert fraud[2]["landed"] == "features missing" and "01-03 missing" in fraud[4]["gated on"]
    assert fraud_actions[4] == "refused" and "data drift" in fraud[4]["retrain because"], fraud
    assert "promoted" in fraud_actions[5:], fraud

    cfg = TrackingConfig.from_settings(get_settings())
    [both] = [r for r in read_audit(cfg, CHURN) if r.action == "promote" and r.to_version == "3"]
    assert both.reason.startswith("both below the floor 0.6: challenger roc_auc ") and both.champion < 0.5, both
    for name in (CHURN, FRAUD):
        trail = [r.action for r in read_audit(cfg, name)]
        assert trail.count("promote") >= 2 and "refuse" in trail, (name, trail)
        assert get_alias(cfg, name, CHAMPION) is not None

    # The week's picture: written to the state dir, logged to MLflow and as a Prefect link artifact.
    picture = re.search(r"Week picture: (\S+\.png) .* run (\w+), Prefect artifact demo-week", out)
    assert picture, out[-2000:]
    path = Path(picture[1])
    assert path == tmp_path / "state" / "reports" / "demo-week-2026-01-01.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [a.path for a in client(cfg).list_artifacts(picture[2])] == [path.name]
    link = Artifact.get("demo-week")
    assert link is not None and link.flow_run_id is not None and path.resolve().as_uri() in str(link.data), link
    # Fraud's labels come with its rows: its realized series is what the monitor measured on the nights it ran.
    assert len(monitored_metric(cfg, FRAUD, "roc_auc")) == 4  # nights 4..7: a champion from night 2, 3 no-data
