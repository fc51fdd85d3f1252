"""The hpsearch benchmark's pure parts: scores compared exactly across ways, and its verdicts."""

from __future__ import annotations

from typing import Any

from benchmarks.hpsearch import compare_scores, verdicts


def _scores(*aucs: float) -> list[dict[str, Any]]:
    return [{"index": i, "params": {"max_depth": i}, "mean": {"roc_auc": auc, "accuracy": 0.7},
             "fold_metrics": [{"roc_auc": auc, "accuracy": 0.7}]} for i, auc in enumerate(aucs)]


def test_compare_scores_is_exact_and_names_the_chosen_candidate() -> None:
    out = compare_scores({"sequential": _scores(0.7, 0.8), "threads": _scores(0.7, 0.8),
                          "dask": _scores(0.7, 0.8 + 1e-12), "sklearn": _scores(0.9, 0.8)})
    assert out["threads"] == out["sequential"] | {"roc_auc_means": [0.7, 0.8]}
    assert out["threads"]["identical"] and out["threads"]["chosen"] == 1
    assert not out["dask"]["identical"] and out["dask"]["same_choice"] and 0 < out["dask"]["max_mean_diff"] < 1e-11
    assert not out["sklearn"]["same_choice"] and out["sklearn"]["chosen"] == 0


def _results(threads_s: float, identical: bool = True) -> dict[str, Any]:
    runs = {"sequential": {"cv_seconds": 100.0, "speedup": 1.0},
            "threads": {"cv_seconds": threads_s, "speedup": 100.0 / threads_s},
            "dask": {"cv_seconds": 80.0, "speedup": 1.25}}
    scores = compare_scores({"sequential": _scores(0.7, 0.8), "threads": _scores(0.7, 0.8),
                             "dask": _scores(0.7, 0.8 if identical else 0.65)})
    return {"runs": runs, "scores": scores, "default": "threads", "flow_ways_identical_every_round": True}


def test_verdicts_pass_at_1_7x_and_fail_below_or_on_different_scores() -> None:
    passed = {v["target"]: v["status"] for v in verdicts(_results(55.0))}
    assert list(passed.values())[:2] == ["PASS", "PASS"] and "1.25x" in passed.values()
    failed = verdicts(_results(62.0, identical=False))
    assert [v["status"] for v in failed[:2]] == ["FAIL", "FAIL"] and "dask: chose 0" in failed[1]["detail"]
