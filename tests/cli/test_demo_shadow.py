"""The shadow demo (examples/shadow): v2 beats v1 on the files, goes into shadow on a real model server under
gate.shadow: required, is judged on the day's live traffic and dropped, while gate.shadow: off promotes it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest

from cli.demo_shadow import MARKER, MODEL, OFF, fresh_state_dir, main

# Everything the demo points at its own state: restored after the test (the demo writes os.environ as a program).
DEMO_ENV = ("NIGHTSHIFT_STATE_DIR", "NIGHTSHIFT_CAPTURE_DIR", "NIGHTSHIFT_MLFLOW_TRACKING_URI",
            "NIGHTSHIFT_MLFLOW_REGISTRY_URI", "NIGHTSHIFT_MLFLOW_ARTIFACT_LOCATION", "NIGHTSHIFT_CATALOGUE_PATH",
            "NIGHTSHIFT_SERVER_TOKEN", "NIGHTSHIFT_SERVER_URL", "PREFECT_HOME", "PREFECT_PROFILES_PATH")


def test_the_state_dir_is_made_afresh_and_only_the_demos_own_is_deleted(tmp_path: Path) -> None:
    state = tmp_path / "demo-shadow"
    assert fresh_state_dir(state) is False and (state / MARKER).exists()
    (state / "mlflow.db").write_text("old run")
    assert fresh_state_dir(state) is True and not (state / "mlflow.db").exists()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "precious.txt").write_text("keep")
    with pytest.raises(ValueError, match="not made by this demo"):
        fresh_state_dir(theirs)
    assert (theirs / "precious.txt").read_text() == "keep"


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_harness")
def test_the_demo_shadows_v2_drops_it_live_and_keeps_v1_where_off_promotes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from nightshift.settings import get_settings
    from tasks.registry.audit import read_audit
    from tasks.registry.store import TrackingConfig
    from tasks.registry.versions import CHAMPION, get_alias

    for key in DEMO_ENV:  # recorded so that teardown puts back what was there (or nothing)
        monkeypatch.setenv(key, os.environ.get(key, ""))
        if not os.environ[key]:
            monkeypatch.delenv(key)
    state = tmp_path / "demo-shadow"
    assert main(["--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    flat = " ".join(out.split())
    cfg = TrackingConfig.from_settings(get_settings())  # the demo's own MLflow, in its state dir
    assert cfg.tracking_uri == f"sqlite:///{state.resolve() / 'mlflow.db'}"

    # First night: v1 of both. Tonight: off promotes v2; required puts it in shadow beside v1 on the server.
    assert f"{MODEL}, night" in out and "promoted; champion v- -> v1" in out
    assert re.search(rf"{OFF}, night \S+: promoted; offline roc_auc v2 .* champion v1 -> v2", out), out
    assert re.search(rf"{MODEL}, night \S+: shadowing; offline roc_auc v2 .* champion v1 -> v1; shadow: v2 in shadow",
                     out), out
    assert '"shadow": { "model_version": "2"' in flat
    # The day's traffic: every row answered by v1, all of them scored by the shadow v2 too.
    assert "1,500 rows in" in out and "answered by: v1 1,500 rows." in out
    assert f'nightshift_shadow_rows_total{{model="{MODEL}",outcome="scored",version="2"}} 1500' in out
    # The next night: judged on the labeled live rows, dropped; v1 stays champion.
    assert re.search(rf"{MODEL}, night \S+: \S+; champion v1 -> v1; shadow: dropped after live comparison: v2 is "
                     "worse live", out), out
    assert f"{MODEL}: champion v1; nothing in shadow" in out and "verdict: worse" in out
    assert "shadow-start" in out and "shadow-drop" in out
    assert f"{OFF} (gate.shadow: off) promoted v2 that night" in flat
    assert f"{MODEL} (gate.shadow: required) shadowed it, dropped it, and kept v1." in flat
    assert re.search(r"v2 was \+0\.\d+ roc_auc better than v1; live, on the 1,500 labeled rows .* v2 was 0\.\d+ worse",
                     flat), flat
    # The registry agrees, and the server is gone.
    assert get_alias(cfg, MODEL, CHAMPION) == "1" and get_alias(cfg, OFF, CHAMPION) == "2"
    assert [r.action for r in read_audit(cfg, MODEL)] == ["promote", "shadow-start", "shadow-drop"]
    url = re.search(r"Serving at (http://127\.0\.0\.1:\d+)", out).group(1)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/health", timeout=2)
