"""The bring-your-own-model example (examples/demand): a model trained outside nightshift adopted as champion, a
regression week of the team's own pipeline, promotions and refusals, served and hot-swapped by a real model server."""

from __future__ import annotations

from pathlib import Path

import httpx
import pandas as pd
import pytest

from cli.demo_demand import EXAMPLE_CATALOGUE, MODEL, main
from tests.cli.test_demo import _table
from tests.serving.conftest import TOKEN, start_server, stop_server


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_harness")
def test_the_example_week_adopted_gated_served_and_hot_swapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys) -> None:
    from nightshift.settings import get_settings
    from tasks.registry.audit import read_audit
    from tasks.registry.store import TrackingConfig
    from tasks.registry.versions import CHAMPION, get_alias, load_version

    monkeypatch.setenv("NIGHTSHIFT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NIGHTSHIFT_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("NIGHTSHIFT_MLFLOW_ARTIFACT_LOCATION", (tmp_path / "artifacts").as_uri())
    monkeypatch.setenv("NIGHTSHIFT_CATALOGUE_PATH", str(EXAMPLE_CATALOGUE))
    server = start_server(MODEL, tmp_path / "server.log", wait_for="/health",
                          NIGHTSHIFT_CATALOGUE_PATH=str(EXAMPLE_CATALOGUE))
    monkeypatch.setenv("NIGHTSHIFT_SERVER_URL", server.url)
    monkeypatch.setenv("NIGHTSHIFT_SERVER_TOKEN", TOKEN)
    try:
        assert main(["--nights", "12"]) == 0
        out = capsys.readouterr().out
        cfg = TrackingConfig.from_settings(get_settings())
        champion = get_alias(cfg, MODEL, CHAMPION)
        version = httpx.get(f"{server.url}/models/{MODEL}/version", timeout=10).json()
        rows = pd.read_parquet(tmp_path / "state" / "landing" / "demand" / "features" / "2026-03-13.parquet").head(3)
        answer = httpx.post(f"{server.url}/models/{MODEL}/predict", timeout=30,
                            json={"rows": rows.drop(columns=["day"]).to_dict(orient="records")})
    finally:
        stop_server(server)

    # Adopted: the team's own model, trained outside nightshift, is v1 and champion before the first night.
    assert "Adopted demand v1 as champion" in out and "adopted by demand-team" in out
    trail = read_audit(cfg, MODEL)
    assert trail[0].action == "adopted" and trail[0].to_version == "1" and trail[0].by == "demand-team"
    # The nights: the team's factory trains every challenger; a drifted world brings refusals, then a promotion.
    nights = _table(out.split(f"\n{MODEL}: rmse estimated")[0], MODEL)
    actions = [r["action"].split(":")[0] for r in nights]
    assert len(nights) == 12 and "Failed" not in actions, actions
    assert "refused" in actions and "promoted" in actions, actions
    assert actions.index("refused") < actions.index("promoted")
    assert [r.action for r in trail].count("promote") == actions.count("promoted")
    promoted = load_version(cfg, MODEL, champion)
    assert champion != "1" and type(promoted.model.named_steps["features"]).__name__ == "DemandFeatures"
    assert promoted.contract.task == "regression" and promoted.contract.label_classes == []
    # Estimated before the sales landed (DLE), compared once they did.
    assert "rmse estimated before the labels (DLE, no labels used)" in out and "│ yes" in out
    # Served: the server imported the team's classes from the catalogue's code_path and swapped to each champion.
    assert version["model_version"] == champion and version["task"] == "regression", version
    assert answer.status_code == 200, answer.text
    values = [p["value"] for p in answer.json()["predictions"]]
    assert len(values) == 3 and all(isinstance(v, float) and v >= 0 for v in values)
