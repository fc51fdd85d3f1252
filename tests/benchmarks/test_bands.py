"""The bands benchmark: its coverage summary and verdicts, and one tiny run of both worlds end to end."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.bands import ALL, BEYOND, NO_SHIFT, Sizes, run_benchmark, summarize, verdicts


def _night(ref: int, night: int, realized: float, kind: str = NO_SHIFT, before: float = 0.01) -> dict[str, Any]:
    return {"world": "demo", "model": "random_forest", "metric": "roc_auc", "reference": ref, "night": night,
            "nights": kind, "realized": realized, "value": 0.80, "lower": 0.77, "upper": 0.83,
            "before_lower": 0.80 - before, "before_upper": 0.80 + before}


def test_coverage_is_counted_before_and_after_per_kind_of_night_and_over_all() -> None:
    rows = [_night(r, n, 0.80 + 0.005 * n) for r in range(2) for n in range(5)]  # 0.80 .. 0.82: all inside after
    rows += [_night(2, n, 0.79 + 0.03 * n, "shift 1 sd") for n in range(4)]  # 0.79, 0.82 inside; 0.85, 0.88 not
    rows += [_night(0, 9, 0.70, BEYOND)]
    summary = {s["nights"]: s for s in summarize(rows)}
    assert list(summary) == [NO_SHIFT, "shift 1 sd", ALL, BEYOND]
    assert summary[NO_SHIFT]["coverage_after"] == 1.0 and summary[NO_SHIFT]["coverage_before"] == 0.6
    assert summary["shift 1 sd"]["coverage_after"] == 0.5 and summary["shift 1 sd"]["worst_reference"] == 0.5
    whole = summary[ALL]
    assert whole["count"] == 14 and whole["references"] == 3 and abs(whole["coverage_after"] - 12 / 14) < 1e-12
    assert abs(whole["width_after"] - 0.06) < 1e-12 and abs(whole["width_before"] - 0.02) < 1e-12
    assert summary[BEYOND]["count"] == 1 and summary[BEYOND]["coverage_after"] == 0.0


def test_the_target_is_the_coverage_of_all_nights_inside_90_to_97_percent() -> None:
    def verdict(inside: int) -> dict[str, Any]:
        rows = [_night(n // 10, n, 0.80 if n < inside else 0.90) for n in range(100)]
        return next(v for v in verdicts(summarize(rows)) if v["kind"] == "target")

    assert verdict(95)["status"] == "PASS" and "95.0% of 100 nights over 10 references" in verdict(95)["detail"]
    assert verdict(89)["status"] == "FAIL" and verdict(98)["status"] == "FAIL"  # too narrow, and too wide
    far = verdicts(summarize([_night(0, 0, 0.70, BEYOND)]))
    assert [(v["kind"], v["status"]) for v in far] == [("reported", "0%")]


@pytest.mark.integration  # a benchmark run end to end, however small
def test_a_tiny_run_scores_both_worlds_before_and_after() -> None:
    tiny = Sizes(demo_window=1_500, demo_night=500, demand_days=14, demand_rows=120, cost_rows=(1_000,))
    results = run_benchmark(references=1, nights=2, beyond=1, sizes=tiny, workers=1, log=lambda _: None)
    kinds = {(s["world"], s["model"], s["metric"], s["nights"]) for s in results["summary"]}
    assert ("demo", "random_forest", "roc_auc", ALL) in kinds and ("demand", "hist_gradient_boosting", "rmse",
                                                                   BEYOND) in kinds
    assert len(results["nights"]) == 2 * 2 * 2 + 3 * 2  # demo: 2 nights x 2 models x 2 metrics; demand: 3 x 2
    demo = [n for n in results["nights"] if n["world"] == "demo"]
    assert all(n["lower"] <= n["before_lower"] <= n["value"] <= n["before_upper"] <= n["upper"] for n in demo)
    assert any(n["calibration_std"] > 0 for n in demo)
    assert len([v for v in results["verdicts"] if v["kind"] == "target"]) == 6
    assert results["costs"][0]["rows"] == 1_000 and results["costs"][0]["fit_ms_with"] > 0
