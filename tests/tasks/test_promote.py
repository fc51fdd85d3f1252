"""Promotion inside a Prefect transaction (undo on failure) and the promotion lock."""

from __future__ import annotations

import threading
import time

import pytest
from prefect import flow
from prefect.transactions import transaction

from tasks import tracking as tr
from tasks.promote import DeployRefused, model_lock, move_champion_task, redeploy

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_failure_after_the_move_rolls_the_aliases_back(tracking, versions) -> None:
    name = versions
    tr.move_champion(tracking, name, "1")

    @flow
    def promote_then_fail() -> None:
        with transaction():
            move_champion_task(tracking, name, "2")
            assert tr.get_alias(tracking, name, tr.CHAMPION) == "2"
            raise DeployRefused("server said no")

    with pytest.raises(DeployRefused):
        promote_then_fail()
    assert tr.alias_state(tracking, name) == tr.AliasState("1", None)


def test_successful_transaction_keeps_the_move(tracking, versions) -> None:
    name = versions

    @flow
    def promote() -> None:
        with transaction():
            move_champion_task(tracking, name, "1")

    promote()
    assert tr.alias_state(tracking, name) == tr.AliasState("1", None)


def test_two_promotions_cannot_overlap(tracking, model_name) -> None:
    events: list[str] = []

    def hold() -> None:
        with model_lock(tracking, model_name, "promote"):
            events.append("a-in")
            time.sleep(3)
            events.append("a-out")

    first = threading.Thread(target=hold)
    first.start()
    while "a-in" not in events:
        time.sleep(0.05)
    with model_lock(tracking, model_name, "promote", timeout_seconds=60):
        events.append("b-in")
    first.join()
    assert events == ["a-in", "a-out", "b-in"]


def test_redeploy_without_a_server_records_not_deployed() -> None:
    outcome = redeploy(None, None)
    assert outcome.status == "not-deployed" and "NIGHTSHIFT_SERVER_URL" in outcome.detail
    with pytest.raises(DeployRefused, match="unreachable"):
        redeploy("http://127.0.0.1:9", "t", timeout_seconds=2)
