"""Aliases, rollback of a promotion, the audit trail and crash consistency against a real MLflow SQLite registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tasks import tracking as tr


def test_move_champion_keeps_previous_and_is_idempotent(tracking, versions) -> None:
    name = versions
    assert tr.move_champion(tracking, name, "1") == tr.AliasState(None, None)
    before = tr.move_champion(tracking, name, "2")
    assert before == tr.AliasState("1", None)
    assert tr.alias_state(tracking, name) == tr.AliasState("2", "1")
    assert tr.move_champion(tracking, name, "2") == tr.AliasState("2", "1")  # same version: nothing moves
    assert tr.alias_state(tracking, name) == tr.AliasState("2", "1")
    tr.restore_aliases(tracking, name, before)
    assert tr.alias_state(tracking, name) == tr.AliasState("1", None)


def test_audit_trail_round_trips_and_tags_versions(tracking, versions) -> None:
    name = versions
    record = tr.AuditRecord(time="20261125T010203.000000Z", model_name=name, action="promote", from_version="1",
                            to_version="2", metric="roc_auc", challenger=0.81, champion=0.79, ci_low=0.005,
                            ci_high=0.03, reason="challenger better", flow_run_id="abc")
    tr.append_audit(tracking, record)
    tr.append_audit(tracking, record.model_copy(update={"time": "20261125T020000.000000Z", "action": "rollback",
                                                       "reason": "bad latency"}))
    assert [r.action for r in tr.read_audit(tracking, name)] == ["promote", "rollback"]
    assert tr.read_audit(tracking, name)[0] == record
    tags = tr.version_tags(tracking, name, "2")
    assert json.loads(tags["nightshift.audit.20261125T010203.000000Z.promote"])["ci_low"] == 0.005


@pytest.mark.parametrize("fault", ["between-aliases", pytest.param("after-champion", marks=pytest.mark.integration)])
def test_kill_9_during_promotion_leaves_champion_on_a_gated_version(tracking, versions, fault: str) -> None:
    name = versions
    tr.move_champion(tracking, name, "1")
    code = (f"from tasks.tracking import TrackingConfig, move_champion\n"
            f"cfg = TrackingConfig.model_validate_json({tracking.model_dump_json()!r})\n"
            f"move_champion(cfg, {name!r}, '2')\n")
    env = {**os.environ, "NIGHTSHIFT_FAULT": fault}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr  # really killed mid-promotion
    state = tr.alias_state(tracking, name)
    assert state.champion in ("1", "2")
    assert json.loads(tr.version_tags(tracking, name, state.champion)[tr.GATE_TAG])["promote"] is True
    # a rerun completes the promotion exactly once
    tr.move_champion(tracking, name, "2")
    assert tr.alias_state(tracking, name) == tr.AliasState("2", "1")
