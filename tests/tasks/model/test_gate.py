from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from tasks.catalogue.config import GateConfig
from tasks.model.gate import gate, paired_bootstrap

RNG = np.random.default_rng(7)
N = 4_000
Y = RNG.integers(0, 2, N)


def _model(skill: float, seed: int) -> np.ndarray:
    """Probabilities whose separation of the classes grows with `skill`."""
    noise = np.random.default_rng(seed).normal(0, 1, N)
    p = 1 / (1 + np.exp(-(skill * (2 * Y - 1) + noise)))
    return np.column_stack([1 - p, p])


CHAMPION = _model(1.0, 1)


def test_bootstrap_point_estimate_matches_scikit_learn() -> None:
    challenger = _model(1.4, 2)
    diff, lo, hi = paired_bootstrap(Y, challenger, CHAMPION, [0, 1], "roc_auc", 500, 0.95, 0)
    assert diff == pytest.approx(roc_auc_score(Y, challenger[:, 1]) - roc_auc_score(Y, CHAMPION[:, 1]))
    assert lo < diff < hi
    loss_diff, _, _ = paired_bootstrap(Y, challenger, CHAMPION, [0, 1], "log_loss", 200, 0.95, 0)
    assert loss_diff == pytest.approx(log_loss(Y, CHAMPION) - log_loss(Y, challenger), rel=1e-6)  # positive = better


def test_clear_win_promotes() -> None:
    decision = gate(Y, _model(1.6, 2), CHAMPION, [0, 1], GateConfig(min_margin=0.005))
    assert decision.promote and decision.ci_low > 0.005
    assert decision.reason.startswith("challenger better: roc_auc")


def test_tie_does_not_promote() -> None:
    decision = gate(Y, CHAMPION.copy(), CHAMPION, [0, 1], GateConfig())
    assert not decision.promote and decision.difference == 0 and decision.ci_low == 0
    assert "not measurably better" in decision.reason


def test_loss_does_not_promote() -> None:
    decision = gate(Y, _model(0.6, 3), CHAMPION, [0, 1], GateConfig())
    assert not decision.promote and decision.ci_high < 0


def test_small_noisy_win_inside_the_interval_does_not_promote() -> None:
    decision = gate(Y[:300], _model(1.02, 4)[:300], CHAMPION[:300], [0, 1], GateConfig())
    assert not decision.promote and decision.ci_low <= 0 < decision.ci_high


def test_slice_regression_blocks_promotion() -> None:
    segment = np.where(np.arange(N) % 4 == 0, "enterprise", "basic")
    challenger = _model(1.8, 5)
    bad = segment == "enterprise"
    challenger[bad] = _model(0.3, 6)[bad]  # much worse on one segment, better overall
    frame = pd.DataFrame({"plan": segment})
    config = GateConfig(slice_columns=["plan"], slice_tolerance=0.02)
    decision = gate(Y, challenger, CHAMPION, [0, 1], config, slice_frame=frame)
    assert decision.difference > 0 and not decision.promote
    assert "slice plan=enterprise regressed" in decision.reason
    assert {s.value: s.regressed for s in decision.slices} == {"basic": False, "enterprise": True}


def test_first_model_needs_the_floor() -> None:
    assert gate(Y, _model(1.5, 8), None, [0, 1], GateConfig(absolute_floor=0.7)).promote
    weak = gate(Y, _model(0.1, 9), None, [0, 1], GateConfig(absolute_floor=0.7))
    assert not weak.promote and weak.reason.startswith("first model: roc_auc") and "misses the floor 0.7" in weak.reason


def test_both_below_the_floor_the_measurably_better_one_serves() -> None:
    decision = gate(Y, _model(0.5, 10), _model(0.1, 11), [0, 1], GateConfig(absolute_floor=0.9))
    assert decision.promote and decision.ci_low > 0 and decision.champion_below_floor, decision.reason
    assert decision.reason.startswith("both below the floor 0.9: challenger roc_auc"), decision.reason
    assert decision.close_call == [f"the champion misses the floor 0.9 ({decision.champion:.4f})"]


def test_both_below_the_floor_but_not_measurably_better_keeps_the_champion() -> None:
    same = _model(0.1, 11)
    decision = gate(Y, same, same, [0, 1], GateConfig(absolute_floor=0.9))
    assert not decision.promote and decision.champion_below_floor
    assert "misses the floor 0.9; the champion misses it too" in decision.reason, decision.reason


def test_challenger_below_floor_never_replaces_a_champion_above_it() -> None:
    decision = gate(Y, _model(0.1, 12), CHAMPION, [0, 1], GateConfig(absolute_floor=0.7))
    assert not decision.promote and not decision.champion_below_floor
    assert decision.reason.startswith("challenger roc_auc") and "misses the floor 0.7" in decision.reason


def test_a_metric_that_cannot_be_measured_is_never_compared() -> None:
    ones = np.ones(N, dtype=int)
    decision = gate(ones, _model(1.6, 2), CHAMPION, [0, 1], GateConfig())
    assert not decision.promote and decision.challenger is None and decision.difference is None
    assert decision.reason == (f"cannot judge on this holdout: every one of the {N:,} labels is 1: roc_auc "
                               "needs two classes; the champion stays")
    assert "not measurable" in decision.markdown()
    flat = np.tile([0.5, 0.5], (N, 1))
    assert "every prediction is the same" in gate(Y, flat, CHAMPION, [0, 1], GateConfig()).reason


def test_a_ci_straddling_the_margin_is_a_close_call() -> None:
    decision = gate(Y, _model(1.02, 3), CHAMPION, [0, 1], GateConfig(absolute_floor=None))
    assert decision.ci_low < 0 < decision.ci_high and not decision.promote
    assert decision.close_call == [f"the improvement's CI {decision.ci_low:+.4f}..{decision.ci_high:+.4f} straddles "
                                   "the margin 0.0"]
    assert gate(Y, _model(1.6, 2), CHAMPION, [0, 1], GateConfig()).close_call == []


def test_multiclass_accuracy_and_markdown() -> None:
    y = np.array(list("abc") * 200)
    truth = (y[:, None] == np.array(list("abc"))).astype(float)
    good = 0.8 * truth + 0.2 / 3
    meh = 0.3 * truth + 0.7 / 3
    meh[::3] = meh[::3][:, ::-1]
    decision = gate(y, good, meh, list("abc"), GateConfig(metric="accuracy", absolute_floor=0.5),
                    challenger_version="2", champion_version="1")
    assert decision.promote and "| challenger v2 |" in decision.markdown()


# Hosted LLMs: the reply scorers and the gate on per-item scores with budgets.
SCHEMA = {"type": "object", "properties": {"category": {"enum": ["billing", "bug"]}, "priority": {"enum": ["low",
          "high"]}}, "required": ["category", "priority"], "additionalProperties": False}
EXPECTED = {"category": "billing", "priority": "high"}


@pytest.mark.parametrize(("reply", "valid", "exact", "refusal", "error"), [
    ('{"category": "billing", "priority": "high"}', True, True, False, None),
    ('```json\n{"category": "billing", "priority": "high"}\n```', True, True, False, None),
    ('{"category": "Billing", "priority": "high"}', False, False, False, "is not one of"),
    ('{"category": "bug", "priority": "high"}', True, False, False, None),
    ('{"category": "billing"}', False, False, False, "'priority' is a required property"),
    ('{"category": "billing", "priority": "high", "why": "x"}', False, False, False, "Additional properties"),
    ("I'm sorry, I cannot help with that.", False, False, True, "reply is not JSON"),
    (None, False, False, False, "gpt-x: HTTP 500"),
])
def test_llm_replies_are_scored_by_schema_exact_answer_and_refusal(reply, valid, exact, refusal, error) -> None:
    from tasks.llm.scoring import score_reply

    scored = score_reply("t1", reply, EXPECTED, SCHEMA, error="gpt-x: HTTP 500" if reply is None else None)
    assert (scored.json_valid, scored.exact, scored.refusal) == (valid, exact, refusal)
    assert scored.score == (1.0 if exact else 0.0)
    assert (error is None and scored.error is None) or (error is not None and error in scored.error), scored.error


def test_llm_gate_pairs_items_and_holds_the_budgets() -> None:
    from tasks.llm.scoring import LLMGateConfig, gate_scores

    rng = np.random.default_rng(3)
    champion = (rng.random(400) < 0.75).astype(float)
    better = np.where(rng.random(400) < 0.6, 1.0, champion)  # fixes ~60% of the champion's misses, breaks none
    cfg = LLMGateConfig(resamples=500, latency_slack_ms=0)
    costs = dict(champion_cost_per_1k=1.0, champion_p95_ms=800.0)
    ok = gate_scores(better, champion, cfg, challenger_cost_per_1k=1.2, challenger_p95_ms=900.0, **costs)
    assert ok.promote and ok.ci_low > 0 and ok.metric == "exact_match" and ok.rows == 400, ok.reason
    pricey = gate_scores(better, champion, cfg, challenger_cost_per_1k=1.3, challenger_p95_ms=900.0, **costs)
    assert not pricey.promote and "over budget: cost per 1k items 1.3 USD exceeds" in pricey.reason
    slow = gate_scores(better, champion, cfg, challenger_cost_per_1k=1.0, challenger_p95_ms=1300.0, **costs)
    assert not slow.promote and "p95 latency 1300 ms exceeds the champion's 800 ms by more than 50%" in slow.reason
    same = gate_scores(champion, champion, cfg, challenger_cost_per_1k=1.0, challenger_p95_ms=800.0, **costs)
    assert not same.promote and same.reason.startswith("not measurably better")
    weak = gate_scores(np.zeros(400), None, cfg, challenger_cost_per_1k=1.0, challenger_p95_ms=1.0)
    assert not weak.promote and weak.reason == "first version: exact-match share 0.0000 misses the floor 0.7"
    assert "Budgets:" in ok.markdown()
    with pytest.raises(ValueError, match="not the same items"):
        gate_scores(better[:10], champion, cfg, challenger_cost_per_1k=1.0, challenger_p95_ms=1.0, **costs)
    changed = ["new template variable(s) 'customer_tier': callers must send them"]
    refused = gate_scores(better, champion, cfg, challenger_cost_per_1k=1.0, challenger_p95_ms=800.0,
                          champion_version="3", schema_changes=changed, **costs)
    assert not refused.promote and refused.reason.startswith("interface differs from champion v3: new template")
    allowed = gate_scores(better, champion, cfg.model_copy(update={"allow_schema_change": True}),
                          challenger_cost_per_1k=1.0, challenger_p95_ms=800.0, schema_changes=changed, **costs)
    assert allowed.promote and allowed.schema_changes == changed  # promote() then lets the servers swap interfaces


def test_a_prompt_with_other_variables_or_response_format_is_an_interface_change() -> None:
    from tasks.llm.config import LLMConfig
    from tasks.llm.evaluation import interface_changes

    live = LLMConfig(template="Ticket: {{ subject }} {{ body }}", model="fake-small",
                     response_format="json_object")
    assert interface_changes(live, live.model_copy(update={"model": "fake-large", "temperature": 0.7})) == []
    changed = interface_changes(live, LLMConfig(template="{{ subject }} {{ tier }}", model="fake-small"))
    assert changed[0].startswith("new template variable(s) 'tier'") and "'body' no longer used" in changed[1]
    assert changed[2].startswith("response format")


def test_the_llm_gate_pairs_by_item_id_and_can_gate_on_the_judge() -> None:
    from tasks.llm.scoring import LLMGateConfig, gate_scores

    ids = [f"t{i:03d}" for i in range(200)]
    rng = np.random.default_rng(5)
    champion = dict(zip(ids, rng.random(200).round(2)))
    better = {i: min(1.0, v + 0.2) for i, v in champion.items()}
    cfg = LLMGateConfig(resamples=500, metric="judge", absolute_floor=0.5)
    costs = dict(challenger_cost_per_1k=1.0, challenger_p95_ms=10.0, champion_cost_per_1k=1.0, champion_p95_ms=10.0)
    in_order = gate_scores(better, champion, cfg, **costs)
    shuffled = gate_scores(dict(reversed(list(better.items()))), champion, cfg, **costs)  # same items, other order
    assert in_order.promote and in_order.metric == "judge_score" and in_order.reason.startswith(
        "challenger better: judge score")
    assert (shuffled.difference, shuffled.ci_low, shuffled.ci_high) == pytest.approx(
        (in_order.difference, in_order.ci_low, in_order.ci_high))
    lists = gate_scores(list(better.values()), list(champion.values()), cfg, **costs)
    assert lists.ci_low == pytest.approx(in_order.ci_low)
    weak = gate_scores({"a": 0.2}, None, cfg, challenger_cost_per_1k=1.0, challenger_p95_ms=1.0)
    assert weak.reason == "first version: mean judge score 0.2000 misses the floor 0.5"
    with pytest.raises(ValueError, match=r"not the same items \(only the challenger's: \['x'\]"):
        gate_scores({**better, "x": 1.0}, champion, cfg, **costs)


def test_only_replies_that_passed_the_deterministic_checks_get_a_verdict() -> None:
    from tasks.llm.scoring import score_reply, with_verdicts

    good = '{"category": "billing", "priority": "high"}'
    scores = [score_reply("ok", good, EXPECTED, SCHEMA), score_reply("half", good, EXPECTED, SCHEMA),
              score_reply("prose", "I'm sorry, I cannot help with that.", EXPECTED, SCHEMA),
              score_reply("schema", '{"category": "billing"}', EXPECTED, SCHEMA),
              score_reply("down", None, EXPECTED, SCHEMA, error="gpt-x: HTTP 503"),
              score_reply("garbled", good, EXPECTED, SCHEMA), score_reply("range", good, EXPECTED, SCHEMA),
              score_reply("judge-down", good, EXPECTED, SCHEMA), score_reply("lost", good, EXPECTED, SCHEMA)]
    verdicts = {"ok": ('{"score": 1, "reason": "right"}', None), "half": ('{"score": 0.5}', None),
                "garbled": ("The reply looks fine to me.", None), "range": ('{"score": 7, "reason": "!"}', None),
                "judge-down": (None, "fake-judge: HTTP 500 after 1 retry: injected")}
    judged = {s.item_id: s for s in with_verdicts(scores, verdicts)}
    assert {k: (s.judge, s.judge_error) for k, s in judged.items()} == {
        "ok": (1.0, False), "half": (0.5, False), "prose": (0.0, False), "schema": (0.0, False),
        "down": (0.0, False), "garbled": (0.0, True), "range": (0.0, True), "judge-down": (0.0, True),
        "lost": (0.0, False)}
    assert (judged["ok"].judge_note, judged["half"].judge_note) == ("right", "no reason given")
    assert judged["down"].judge_note == "not judged: gpt-x: HTTP 503"
    assert judged["schema"].judge_note.startswith("not judged: reply breaks the schema")
    assert judged["prose"].judge_note.startswith("not judged: reply is not JSON")
    assert judged["garbled"].judge_note.startswith("judge reply is not JSON")
    assert judged["range"].judge_note == "judge score 7 is not a number from 0 to 1"
    assert judged["judge-down"].judge_note == "judge failed: fake-judge: HTTP 500 after 1 retry: injected"
    assert judged["lost"].judge_note == "not judged: no verdict"
    assert [s.metric("exact") for s in judged.values()][:2] == [1.0, 1.0] and judged["half"].metric("judge") == 0.5
