"""The shadow's life cycle in the registry: started on every replica or none, judged on labeled live rows, promoted
through promote()'s compare-and-swap, dropped or ended; every step audited."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tasks.registry.audit import read_audit
from tasks.registry.shadow import (
    ShadowRefused,
    dropped_before,
    judge_shadow,
    shadow_state,
    start_shadow,
)
from tasks.registry.versions import SHADOW, alias_state, get_alias, move_champion
from tests.tasks.monitoring.test_shadow import land_live_day, shadow_model

pytestmark = pytest.mark.usefixtures("prefect_harness")
DAY = date(2026, 12, 1)


def _live_week(tmp_path: Path, name: str, quality: float, segment_b: float = 0.0, days: int = 2) -> Path:
    root = tmp_path / "served"
    for i in range(days):
        land_live_day(root, tmp_path, DAY + timedelta(days=i), 400, quality, seed=20 + i, segment_b=segment_b,
                      model=name)
    return root


def _actions(tracking, name: str) -> list[tuple[str, str | None, str | None]]:
    return [(r.action, r.from_version, r.to_version) for r in read_audit(tracking, name)]


def test_a_shadow_not_worse_live_is_promoted_by_compare_and_swap(tracking, versions, tmp_path) -> None:
    name = versions
    move_champion(tracking, name, "1")
    detail = start_shadow(tracking, name, "2", "1", DAY, "challenger", "passed the gate", server_url=None, token=None)
    assert detail.startswith("v2 in shadow against champion v1 on no model server configured")
    assert shadow_state(tracking, name).model_dump() == {"version": "2", "against": "1", "started": DAY,
                                                         "role": "challenger"}
    root = _live_week(tmp_path, name, quality=1.4)
    model = shadow_model(tmp_path, name=name, shadow_min_rows=700)
    waiting = judge_shadow(tracking, model, DAY + timedelta(days=1), tmp_path, root)  # one day's labels: 400 rows
    assert waiting.action == "waiting" and "400 of 700 labeled live rows" in waiting.detail
    assert alias_state(tracking, name).champion == "1"

    night = judge_shadow(tracking, model, DAY + timedelta(days=2), tmp_path, root)
    assert night.action == "promoted", night.detail
    assert night.comparison.rows == 800 and night.comparison.verdict == "not-worse"
    assert alias_state(tracking, name) .champion == "2" and get_alias(tracking, name, SHADOW) is None
    assert _actions(tracking, name) == [("shadow-start", "1", "2"), ("promote", "1", "2"), ("shadow-end", "2", "1")]
    promoted = read_audit(tracking, name)[1]
    assert promoted.reason.startswith("live: v2 is not worse live") and promoted.ci_low > -0.01
    assert judge_shadow(tracking, model, DAY + timedelta(days=3), tmp_path, root) is None  # nothing in shadow now


def test_a_shadow_worse_live_is_dropped_and_never_shadowed_again(tracking, versions, tmp_path) -> None:
    name = versions
    move_champion(tracking, name, "1")
    start_shadow(tracking, name, "2", "1", DAY, "challenger", "passed the gate", server_url=None, token=None)
    root = _live_week(tmp_path, name, quality=1.4, segment_b=0.7)
    night = judge_shadow(tracking, shadow_model(tmp_path, name=name), DAY + timedelta(days=2), tmp_path, root)
    assert night.action == "dropped" and night.comparison.verdict == "worse"
    assert "v2 is worse live" in night.detail and night.event  # people are told
    assert alias_state(tracking, name).champion == "1" and get_alias(tracking, name, SHADOW) is None
    assert _actions(tracking, name) == [("shadow-start", "1", "2"), ("shadow-drop", "2", "1")]
    assert "v2 is worse live" in dropped_before(tracking, name, "2")


def test_a_shadow_that_never_gets_sure_is_dropped_after_its_days(tracking, versions, tmp_path) -> None:
    name = versions
    move_champion(tracking, name, "1")
    start_shadow(tracking, name, "2", "1", DAY, "challenger", "passed", server_url=None, token=None)
    root = _live_week(tmp_path, name, quality=0.5)
    model = shadow_model(tmp_path, name=name, shadow_min_rows=100, shadow_max_days=3)
    assert judge_shadow(tracking, model, DAY + timedelta(days=2), tmp_path, root).action == "waiting"
    night = judge_shadow(tracking, model, DAY + timedelta(days=3), tmp_path, root)
    assert night.action == "dropped" and "still undecided after 3 day(s) in shadow" in night.detail


def test_a_newer_champion_ends_the_shadow(tracking, versions, tmp_path) -> None:
    name = versions
    move_champion(tracking, name, "1")
    start_shadow(tracking, name, "2", "1", DAY, "challenger", "passed", server_url=None, token=None)
    move_champion(tracking, name, "3")  # e.g. a rollback or a person's promotion
    night = judge_shadow(tracking, shadow_model(tmp_path, name=name), DAY + timedelta(days=1), tmp_path,
                         tmp_path / "served")
    assert night.action == "superseded" and "champion is v3 now, not v1" in night.detail
    assert get_alias(tracking, name, SHADOW) is None
    assert _actions(tracking, name)[-1] == ("shadow-end", "2", "1")


def test_advisory_records_the_live_comparison_of_the_new_champion_and_tells_when_it_is_worse(tracking, versions,
                                                                                            tmp_path) -> None:
    name = versions
    move_champion(tracking, name, "1")
    move_champion(tracking, name, "2")  # the offline gate promoted v2; v1 shadows it
    start_shadow(tracking, name, "1", "2", DAY, "previous", "advisory", server_url=None, token=None)
    root = tmp_path / "served"
    for i in range(2):  # champion v2 answers, v1 shadows it; v2 is blind on segment b, which live is full of
        land_live_day(root, tmp_path, DAY + timedelta(days=i), 400, 1.4, seed=30 + i, segment_b=0.7, model=name,
                      versions=("2", "1"), swap=True)
    night = judge_shadow(tracking, shadow_model(tmp_path, name=name), DAY + timedelta(days=2), tmp_path, root)
    assert night.action == "ended" and night.comparison.candidate == "champion"
    assert night.comparison.verdict == "worse" and night.event
    assert alias_state(tracking, name).champion == "2"  # advisory: nothing moves by itself
    assert _actions(tracking, name)[-1] == ("shadow-end", "1", "2")


class _Replicas:
    """httpx.post/delete stand-ins for two model servers: the second refuses the shadow."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        self.calls.append(("POST", url))
        status = 422 if url.startswith("http://b") else 200
        return httpx.Response(status, json={"message": "schema differs"}, request=httpx.Request("POST", url))

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        self.calls.append(("DELETE", url))
        return httpx.Response(200, json={"status": "removed"}, request=httpx.Request("DELETE", url))


def test_every_replica_loads_the_shadow_or_none_does(tracking, versions, monkeypatch) -> None:
    name = versions
    move_champion(tracking, name, "1")
    replicas = _Replicas()
    monkeypatch.setattr(httpx, "post", replicas.post)
    monkeypatch.setattr(httpx, "delete", replicas.delete)
    with pytest.raises(ShadowRefused, match=r"model server http://b refused v2 as shadow \(422\)"):
        start_shadow(tracking, name, "2", "1", DAY, "challenger", "passed", server_url="http://a,http://b",
                     token="t")
    assert [(m, u.split("/models")[0]) for m, u in replicas.calls] == [("POST", "http://a"), ("POST", "http://b"),
                                                                       ("DELETE", "http://a")]
    assert get_alias(tracking, name, SHADOW) is None and _actions(tracking, name) == []


def test_a_shadow_alias_set_by_hand_is_judged_against_the_champion_from_that_night(tracking, versions,
                                                                                  tmp_path) -> None:
    from tasks.registry.versions import set_alias

    name = versions
    move_champion(tracking, name, "1")
    set_alias(tracking, name, SHADOW, "2")  # in the MLflow UI: no start, no champion to judge against
    night = judge_shadow(tracking, shadow_model(tmp_path, name=name), DAY, tmp_path, tmp_path / "served")
    assert night.action == "waiting" and "0 of 300 labeled live rows" in night.detail
    assert shadow_state(tracking, name).model_dump() == {"version": "2", "against": "1", "started": DAY,
                                                         "role": "challenger"}
