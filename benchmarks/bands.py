"""Bands benchmark: does the label-free estimate's 95% band hold the realized value on 90-97% of nights?

Simulated nights whose labels are known, each estimated before its labels as the monitor does (the calibrator or
the loss model fitted on the version's labeled held-out reference), then scored against the realized metric:

- demo world (tasks.data.demo, churn): a random forest (nightshift's default kind, the default grid's
  max_depth 12 and min_samples_leaf 4) and a logistic regression, each trained on 70% of a 10,000-row day, the
  other 3,000 rows its reference; nights of 3,000 rows, every other one with DemoDrift's covariate shift (0.5, 1
  or 1.5 standard deviations on three columns, in turn); ROC AUC and accuracy by CBPE;
- demand world (tasks.data.demand, regression): gradient boosting trained on 70% of 28 days x 500 rows, the other
  4,200 rows its reference; nights of 500 rows: a sample of the next two weeks (no shift) or one of the next
  21 days (its weekday and weather: covariate shift); MAE and RMSE by DLE. A few days three months on (warmer
  than any reference day: rows beyond its range) are reported apart, not part of the target.

Every reference (seed) gets its own model, calibrator and loss models: their error is shared by all its nights,
so coverage is counted over several references. The calibrator is refitted every night as the monitor does,
given the reference's and tonight's inputs (recalibrated on tonight's shifted inputs when there are any:
tasks.monitoring.calibration). Measured in the same run: "before", the band as it was before issue 24 (an
isotonic map, the label draws' quantiles alone); "score only", the band of the calibrator fitted on the score alone
(the calibrator's bootstrap, no shift term); DLE's band is unchanged (it already carried its loss model's error). The added cost per shifted
night is timed as a night pays it: calibrator fit and estimate with vs without the shift term, at this
benchmark's sizes and at the monitor's caps (100,000 reference rows, a 100,000-row batch, synthetic
probabilities and inputs).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any, Callable

import numpy as np

TARGET = (0.90, 0.97)
LEVEL = 0.95
REFERENCES = 16  # a reference's calibration error is shared by its nights: many references, fewer nights each
NIGHTS = 16  # per reference and world: 16 x 16 = 256 nights, half of them shifted
BEYOND_NIGHTS = 2  # per reference: demand days three months on (reported, not a target)
QUICK_REFERENCES, QUICK_NIGHTS = 4, 8  # --quick
SHIFTS = (0.5, 1.0, 1.5)  # DemoDrift.covariate_shift of the shifted demo nights, in turn
DEMAND_START = date(2026, 3, 2)
FOREST = {"n_estimators": 100, "max_depth": 12, "min_samples_leaf": 4}
CLASSIFIERS = {"random_forest": FOREST, "logistic_regression": {}}
LABELS = {"random_forest": "forest", "logistic_regression": "logistic", "hist_gradient_boosting": "boosting"}
NO_SHIFT, SHIFT, BEYOND, ALL = "no shift", "covariate shift", "beyond range", "all"


@dataclass(frozen=True)
class Sizes:
    """Rows of the simulated worlds (the smoke test shrinks them)."""

    demo_window: int = 10_000  # 70% trains, 30% is the reference
    demo_night: int = 3_000
    demand_days: int = 28
    demand_rows: int = 500  # per day, and per night
    cost_rows: tuple[int, ...] = (3_000, 100_000)  # reference = batch rows of the cost measurement


def _band(est: Any, before: Any, score_only: Any = None) -> dict[str, float]:
    score_only = score_only or est
    return {"value": est.value, "lower": est.lower, "upper": est.upper, "before_lower": before.lower,
            "before_upper": before.upper, "score_value": score_only.value, "score_lower": score_only.lower,
            "score_upper": score_only.upper}


def demo_reference(ref: int, nights: int, sizes: Sizes) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """One demo reference: both classifiers, their calibrators, `nights` nights each scored before and after."""
    from tasks.data.datasets import infer_features
    from tasks.data.demo import DEMO_DATE, DEMO_LABEL, DemoDrift, generate_demo
    from tasks.model.metrics import classification_metrics
    from tasks.model.train import fit_pipeline, split_train_test
    from tasks.monitoring.calibration import domain_inputs, fit_calibrator
    from tasks.monitoring.estimate import estimate_performance

    window = generate_demo(sizes.demo_window, seed=1_000 + ref, day=0)
    train, reference = split_train_test(window, DEMO_LABEL, 0.3, ref)
    spec = infer_features(train, DEMO_LABEL, exclude=(DEMO_DATE,))
    fitted = {}
    for kind, params in CLASSIFIERS.items():
        model = fit_pipeline(train, spec, kind, params, ref)
        calibrator = fit_calibrator(model.predict_proba(reference[spec.features]), reference[DEMO_LABEL],
                                    model.classes_, seed=ref)
        ref_proba, ref_inputs = model.predict_proba(reference[spec.features]), domain_inputs(model, reference)
        old = fit_calibrator(ref_proba, reference[DEMO_LABEL], model.classes_, seed=ref, resamples=0,
                             map_kind="isotonic")  # the band as it was: isotonic steps, the label draws alone
        fitted[kind] = (model, calibrator, (ref_proba, reference[DEMO_LABEL], ref_inputs), old)
    rows, est_with, est_without = [], 0.0, 0.0
    for night in range(nights):
        shift = 0.0 if night % 2 == 0 else SHIFTS[(night // 2 + ref) % len(SHIFTS)]
        batch = generate_demo(sizes.demo_night, seed=50_000 + 100 * ref + night, day=1 + night,
                              drift=DemoDrift(covariate_shift=shift))
        for kind, (model, calibrator, (ref_proba, ref_labels, ref_inputs), old) in fitted.items():
            proba = model.predict_proba(batch[spec.features])
            realized = classification_metrics(batch[DEMO_LABEL].to_numpy(), proba, model.classes_)
            started = time.perf_counter()
            inputs = domain_inputs(model, batch)  # the monitor fits the calibrator every night, on tonight's shift
            tonight = fit_calibrator(ref_proba, ref_labels, model.classes_, seed=ref, reference_inputs=ref_inputs,
                                     current_inputs=inputs)
            est_with += time.perf_counter() - started
            for metric in ("roc_auc", "accuracy"):
                started = time.perf_counter()
                score_only = estimate_performance(proba, model.classes_, metric, calibrator, seed=night)
                middle = time.perf_counter()
                after = estimate_performance(proba, model.classes_, metric, tonight, seed=night, inputs=inputs)
                est_without += middle - started
                est_with += time.perf_counter() - middle
                before = estimate_performance(proba, model.classes_, metric, old, seed=night)
                rows.append({"world": "demo", "model": kind, "metric": metric, "reference": ref, "night": night,
                             "nights": f"shift {shift:g} sd" if shift else NO_SHIFT, "shift": shift,
                             "realized": realized[metric], "calibration": calibrator.method,
                             "shift_inputs": len(tonight.shift_inputs),
                             "calibration_std": after.calibration_std, "shift_moved": after.shift_moved,
                             **_band(after, before, score_only)})
    estimates = max(1, nights * len(fitted) * 2)
    return rows, {"estimate_ms_without": 1e3 * est_without / estimates, "estimate_ms_with": 1e3 * est_with / estimates}


def demand_reference(ref: int, nights: int, beyond: int, sizes: Sizes) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """One demand reference: the regressor, its two loss models, `nights` nights (and `beyond` far ones)."""
    from tasks.data.datasets import FeatureSpec
    from tasks.data.demand import DEMAND_CATEGORICAL, DEMAND_LABEL, DEMAND_NUMERIC, demand_day, demand_days
    from tasks.model.metrics import regression_metrics
    from tasks.model.train import fit_pipeline, split_train_test
    from tasks.monitoring.dle import estimate_loss, fit_loss_model

    spec = FeatureSpec(label=DEMAND_LABEL, numeric=DEMAND_NUMERIC, categorical=DEMAND_CATEGORICAL)
    rows_per_day = sizes.demand_rows
    window = demand_days(DEMAND_START, sizes.demand_days, rows_per_day, seed=ref)
    train, reference = split_train_test(window, DEMAND_LABEL, 0.3, ref, stratify=False)
    model = fit_pipeline(train, spec, "hist_gradient_boosting", {}, ref, "regression")
    started = time.perf_counter()
    ref_pred = model.predict(reference[spec.features])
    losses = {m: fit_loss_model(reference, spec.features, DEMAND_LABEL, ref_pred, m, seed=ref) for m in ("mae", "rmse")}
    fit_ms = 1e3 * (time.perf_counter() - started) / 2
    after_window = DEMAND_START + timedelta(days=sizes.demand_days)
    pool = demand_days(after_window, 14, rows_per_day, seed=ref)
    rows, est_seconds = [], 0.0
    plan = [(NO_SHIFT if n % 2 == 0 else SHIFT, n) for n in range(nights)] + [(BEYOND, n) for n in range(beyond)]
    for kind, n in plan:
        if kind == NO_SHIFT:
            batch = pool.sample(n=rows_per_day, random_state=1_000 * ref + n).reset_index(drop=True)
        else:
            day = after_window + timedelta(days=(n // 2) % 21 if kind == SHIFT else 90 + 7 * n)
            batch = demand_day(day, rows_per_day, seed=ref)
        pred = model.predict(batch[spec.features])
        realized = regression_metrics(batch[DEMAND_LABEL].to_numpy(dtype=float), pred)
        for metric, loss_model in losses.items():
            started = time.perf_counter()
            est = estimate_loss(loss_model, batch, pred)
            est_seconds += time.perf_counter() - started
            rows.append({"world": "demand", "model": "hist_gradient_boosting", "metric": metric, "reference": ref,
                         "night": n, "nights": kind, "shift": 0.0, "realized": realized[metric],
                         "calibration": "loss model", "calibration_std": 0.0, **_band(est, est)})
    return rows, {"loss_model_fit_ms": fit_ms, "estimate_ms": 1e3 * est_seconds / max(1, 2 * len(plan))}


def cost(rows: int, repeat: int = 3) -> dict[str, float]:
    """Milliseconds a night spends on the shift term at `rows` reference rows and `rows` batch rows: calibrator
    fit and ROC AUC estimate, each without and with the recalibration on tonight's shifted inputs (20 inputs, 3
    shifted by 1 sd; best of `repeat`)."""
    from tasks.monitoring.calibration import fit_calibrator
    from tasks.monitoring.estimate import estimate_performance

    rng = np.random.default_rng(rows)
    score = rng.beta(2.0, 5.0, 2 * rows)
    truth = np.clip(score * 1.1, 0, 1)  # a little under-confident: an isotonic map is fitted
    y = (rng.random(2 * rows) < truth).astype(int)
    ref_p, p = score[:rows], score[rows:]
    inputs = rng.normal(size=(2 * rows, 20))
    inputs[rows:, :3] += 1.0
    best: dict[str, float] = {}
    for _ in range(repeat):
        for label, given in (("without", False), ("with", True)):
            started = time.perf_counter()
            calibrator = fit_calibrator(ref_p, y[:rows], [0, 1], reference_inputs=inputs[:rows] if given else None,
                                        current_inputs=inputs[rows:] if given else None)
            middle = time.perf_counter()
            estimate_performance(p, [0, 1], "roc_auc", calibrator, inputs=inputs[rows:] if given else None)
            done = time.perf_counter()
            for key, seconds in ((f"fit_ms_{label}", middle - started), (f"estimate_ms_{label}", done - middle)):
                best[key] = min(best.get(key, float("inf")), 1e3 * seconds)
    return {"rows": rows, **best, "added_ms": best["fit_ms_with"] + best["estimate_ms_with"]
            - best["fit_ms_without"] - best["estimate_ms_without"]}


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Coverage and mean width before and after, per world, model, metric and kind of night, then all the
    target's nights (no shift and covariate shift) of each world, model and metric."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["world"], r["model"], r["metric"], r["nights"]), []).append(r)
        if r["nights"] != BEYOND:
            groups.setdefault((r["world"], r["model"], r["metric"], ALL), []).append(r)
    out = []
    for (world, model, metric, nights), group in groups.items():
        realized = np.array([g["realized"] for g in group])
        value = np.array([g["value"] for g in group])

        def col(key: str) -> np.ndarray:  # no score-only band recorded (DLE): the band itself
            return np.array([g.get(key, g[key.removeprefix("score_")]) for g in group])

        def inside(lo: str, hi: str) -> np.ndarray:
            return (col(lo) <= realized) & (realized <= col(hi))

        def width(lo: str, hi: str) -> float:
            return float(np.mean(col(hi) - col(lo)))

        per_ref: dict[int, list[bool]] = {}
        for g, hit in zip(group, inside("lower", "upper")):
            per_ref.setdefault(g["reference"], []).append(bool(hit))
        out.append({"world": world, "model": model, "metric": metric, "nights": nights, "count": len(group),
                    "references": len(per_ref), "coverage_before": float(inside("before_lower", "before_upper").mean()),
                    "coverage_after": float(inside("lower", "upper").mean()),
                    "width_before": width("before_lower", "before_upper"), "width_after": width("lower", "upper"),
                    "coverage_score_only": float(inside("score_lower", "score_upper").mean()),
                    "width_score_only": width("score_lower", "score_upper"),
                    "mean_abs_error": float(np.abs(realized - value).mean()),
                    "mean_error": float((realized - value).mean()),
                    "worst_reference": float(min(np.mean(h) for h in per_ref.values()))})
    order = {NO_SHIFT: "0", ALL: "2", BEYOND: "3"}  # the shifted kinds in between, by name
    return sorted(out, key=lambda s: (s["world"], s["model"], s["metric"], order.get(s["nights"], "1" + s["nights"])))


def verdicts(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per world, model and metric: all its no-shift and shifted nights' coverage inside TARGET (the target); the
    nights beyond the reference's range reported."""
    lo, hi = TARGET
    out = []
    for s in summary:
        name = f"{s['world']} {s['model']} {s['metric']}"
        if s["nights"] == ALL:
            ok = lo <= s["coverage_after"] <= hi
            out.append({"kind": "target", "status": "PASS" if ok else "FAIL",
                        "target": f"{name}: {LEVEL:.0%} band holds the realized value on {lo:.0%}-{hi:.0%} of nights",
                        "detail": f"{s['coverage_after']:.1%} of {s['count']} nights over {s['references']} "
                                  f"references (before: {s['coverage_before']:.1%}); mean width "
                                  f"{s['width_before']:.4f} -> {s['width_after']:.4f}"})
        elif s["nights"] == BEYOND:
            out.append({"kind": "reported", "status": f"{s['coverage_after']:.0%}",
                        "target": f"{name}: nights beyond the reference's range",
                        "detail": f"{s['count']} nights, mean error {s['mean_error']:+.4f}"})
    return out


def _reference(world: str, ref: int, nights: int, beyond: int, sizes: Sizes) -> tuple[list[dict[str, Any]],
                                                                                     dict[str, float], float]:
    """One reference of one world in a worker process, single-threaded (OpenMP threads on shared cores stall)."""
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    with threadpool_limits(1):
        rows, timing = (demo_reference(ref, nights, sizes) if world == "demo" else
                        demand_reference(ref, nights, beyond, sizes))
    return rows, timing, time.perf_counter() - started


def run_benchmark(references: int = REFERENCES, nights: int = NIGHTS, beyond: int = BEYOND_NIGHTS,
                  sizes: Sizes = Sizes(), workers: int = 2,  # noqa: B008
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every reference of both worlds (`workers` processes), the summary, the verdicts and the added cost."""
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    timings: dict[str, list[dict[str, float]]] = {"demo": [], "demand": []}
    tasks = [(world, ref) for ref in range(references) for world in ("demand", "demo")]

    def done(world: str, ref: int, result: tuple[list[dict[str, Any]], dict[str, float], float]) -> None:
        rows.extend(result[0])
        timings[world].append(result[1])
        log(f"{world} reference {ref + 1}/{references}: {result[2]:.0f} s")

    if workers <= 1:
        for world, ref in tasks:
            done(world, ref, _reference(world, ref, nights, beyond, sizes))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            jobs = {pool.submit(_reference, world, ref, nights, beyond, sizes): (world, ref) for world, ref in tasks}
            for job in as_completed(jobs):
                done(*jobs[job], job.result())
    rows.sort(key=lambda r: (r["world"], r["model"], r["metric"], r["reference"], r["nights"], r["night"]))
    costs = [cost(n) for n in sizes.cost_rows]
    summary = summarize(rows)
    return {"benchmark": "bands", "level": LEVEL, "target": list(TARGET), "references": references,
            "nights_per_reference": nights, "beyond_nights_per_reference": beyond, "sizes": asdict(sizes),
            "cores": os.cpu_count(), "seconds": time.perf_counter() - started, "summary": summary,
            "verdicts": verdicts(summary), "costs": costs,
            "timings": {w: {k: float(np.mean([t[k] for t in ts])) for k in ts[0]} for w, ts in timings.items() if ts},
            "nights": rows}


def print_results(results: dict[str, Any]) -> None:
    """The coverage table, the verdicts and the added cost."""
    import sys

    from rich.console import Console
    from rich.table import Table

    from benchmarks import print_verdicts

    console = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title=f"Bands: {results['level']:.0%} band of the label-free estimate vs the realized value, "
                        f"{results['references']} references x {results['nights_per_reference']} nights per world "
                        f"({results['seconds'] / 60:.1f} min)", title_justify="left")
    for name in ("world", "model", "metric", "nights", "count", "coverage before", "score only", "coverage after",
                 "worst reference", "width before", "score only", "width after", "mean |error|"):
        table.add_column(name, justify="left" if name in ("world", "model", "metric", "nights") else "right")
    for s in results["summary"]:
        table.add_row(s["world"], LABELS.get(s["model"], s["model"]), s["metric"], s["nights"], str(s["count"]),
                      f"{s['coverage_before']:.1%}", f"{s.get('coverage_score_only', float('nan')):.1%}",
                      f"{s['coverage_after']:.1%}", f"{s['worst_reference']:.0%}", f"{s['width_before']:.4f}",
                      f"{s.get('width_score_only', float('nan')):.4f}", f"{s['width_after']:.4f}",
                      f"{s['mean_abs_error']:.4f}")
    console.print(table)
    print_verdicts(console, results["verdicts"])
    for c in results["costs"]:
        console.print(f"added per shifted night at {c['rows']:,} reference and batch rows: {c['added_ms']:.0f} ms (calibrator "
                      f"fit {c['fit_ms_without']:.0f} -> {c['fit_ms_with']:.0f} ms, ROC AUC estimate "
                      f"{c['estimate_ms_without']:.0f} -> {c['estimate_ms_with']:.0f} ms)")
    demo = results["timings"].get("demo")
    if demo:
        console.print(f"demo nights ({results['sizes']['demo_night']:,} rows), mean time of one estimate: "
                      f"{demo['estimate_ms_without']:.0f} ms with the reference's calibrator, "
                      f"{demo['estimate_ms_with']:.0f} ms refitting it on tonight's shift (fit included)")
