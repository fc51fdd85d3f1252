"""Alarms benchmark: how often the dataset-drift decision fires on undrifted nights (false alarms) and on the demo's
drifted days (detection), before (DataDriftPreset's tests and per-column thresholds, `decision="preset"`) and after
(two-sample chi-square with rare levels pooled, Benjamini-Hochberg across columns, `decision="adjusted"`).

An undrifted night is the same world drawn with other seeds: a reference of 300 to 50,000 rows against a 23,000-row
night, both undrifted. There are two worlds. "demo" is the demo's churn table (20 numeric, 5 categorical columns).
"zipf" is a census-like table with high-cardinality categorical columns with Zipf-like frequencies and rare levels:
an occupation with 200 levels, a state with 50, a class of worker with levels at 0.8% and 0.2%. A drifted day is the
demo's: the benchmark drift scenarios (`benchmarks.drift.scenario_drift`) and `make demo`'s crowd day (churn's day 6:
covariate shift 1.0 and category mix 0.5, 6 of 25 columns), each against an undrifted reference.
"""

from __future__ import annotations

import os
import platform
import sys
import time
import warnings
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

SIZES = (300, 1_000, 5_000, 50_000)
NIGHT_ROWS = 23_000
SMALL = 1_000  # up to this many reference rows the tests are p-value tests: the decision changes there
SMALL_NIGHTS = 100  # undrifted nights per world and small reference size (0 of 100: 95% upper bound 3.0%)
NIGHTS = 40  # undrifted nights per world and larger size, where before and after run the same distance tests
DETECT_NIGHTS = 10  # drifted nights per scenario and reference size
QUICK_NIGHTS, QUICK_DETECT_NIGHTS = 6, 2
WORLDS = ("demo", "zipf")
DECISIONS = ("preset", "adjusted")  # before, after
DRIFT_SHARE = 0.2  # the catalogue's default dataset drift share
TARGET_RATE = 0.05
MIN_DETECTION = 0.9  # the crowd day (share 0.24 >= 0.2) must still be caught on at least 90% of nights
SCENARIOS = ("covariate", "category_mix", "crowd")
_MIX_COLUMNS = ("plan", "region", "channel")  # the categorical columns whose mix `category_mix` moves

_OCCUPATIONS = 200
_STATES = 50
_EDUCATION = (0.02, 0.01, 0.012, 0.015, 0.02, 0.025, 0.03, 0.27, 0.2, 0.08, 0.17, 0.1, 0.03, 0.012, 0.004, 0.002)
_WORKER = (0.70, 0.08, 0.07, 0.06, 0.05, 0.03, 0.008, 0.002)


def _zipf(levels: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, levels + 1) ** exponent
    return weights / weights.sum()


def generate_zipf(rows: int, seed: int) -> pd.DataFrame:
    """A census-like table: 5 categorical columns (200-, 50-, 16-, 8- and 2-level, Zipf-like and with rare levels)
    and 4 numeric ones (integer ages and hours with heavy ties, a skewed income, a 0-4 count)."""
    import pandas as pd

    rng = np.random.default_rng(seed)

    def pick(prefix: str, probs: np.ndarray | tuple[float, ...]) -> np.ndarray:
        p = np.asarray(probs, dtype=float)
        return np.asarray([f"{prefix}{i:03d}" for i in range(len(p))], dtype=object)[rng.choice(len(p), rows,
                                                                                                  p=p / p.sum())]

    hours = np.where(rng.random(rows) < 0.5, 40.0, np.clip(np.round(rng.normal(38, 12, rows)), 1, 99))
    return pd.DataFrame({
        "occupation": pick("occ", _zipf(_OCCUPATIONS, 1.1)),
        "state": pick("st", _zipf(_STATES, 0.8)),
        "education": pick("edu", _EDUCATION),
        "class_of_worker": pick("cow", _WORKER),
        "sex": pick("sex", (0.52, 0.48)),
        "age": np.clip(np.round(rng.normal(42, 14, rows)), 17, 94),
        "hours_per_week": hours,
        "income": rng.lognormal(10.4, 0.9, rows),
        "children": np.clip(rng.poisson(0.8, rows), 0, 4).astype(float),
    })


ZIPF_NUMERIC = ("age", "hours_per_week", "income", "children")
ZIPF_CATEGORICAL = ("occupation", "state", "education", "class_of_worker", "sex")


def world_columns(world: str) -> tuple[list[str], list[str]]:
    """A world's numeric and categorical columns."""
    from tasks.data.demo import DEMO_CATEGORICAL, DEMO_NUMERIC

    return (list(DEMO_NUMERIC), list(DEMO_CATEGORICAL)) if world == "demo" else (list(ZIPF_NUMERIC),
                                                                                list(ZIPF_CATEGORICAL))


def world_rows(world: str, rows: int, seed: int, scenario: str | None = None) -> pd.DataFrame:
    """`rows` rows of a world, undrifted, or (demo only) drifted as `scenario` says."""
    from tasks.data.demo import generate_demo

    if world == "zipf":
        return generate_zipf(rows, seed)
    if scenario is None:
        return generate_demo(rows, seed=seed, day=0)
    return generate_demo(rows, seed=seed, day=1, drift=scenario_drift(scenario))


def scenario_drift(name: str) -> Any:
    """The drift of a scenario: the drift benchmark's, or `make demo`'s crowd day."""
    from benchmarks.drift import scenario_drift as benchmark_drift
    from tasks.data.demo import DemoDrift

    return DemoDrift(covariate_shift=1.0, category_mix=0.5) if name == "crowd" else benchmark_drift(name)


def drifted_columns(name: str) -> set[str]:
    """The columns a scenario really moves."""
    covariate = set(scenario_drift("covariate").drifted_columns)
    return {"covariate": covariate, "category_mix": set(_MIX_COLUMNS), "crowd": covariate | set(_MIX_COLUMNS)}[name]


def decide(reference: pd.DataFrame, night: pd.DataFrame, world: str, decision: str) -> dict[str, Any]:
    """One night's dataset-drift decision, the columns it flagged and the numpy warnings it raised."""
    from tasks.monitoring.drift import compute_drift

    numeric, categorical = world_columns(world)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        result = compute_drift(reference, night, numeric, categorical, drift_share=DRIFT_SHARE, decision=decision)
    # the same tests without the adjustment: each p-value against the plain 0.05 (what BH adds, measured)
    unadjusted = sum(c.score < 0.05 if c.adjusted is not None else c.drifted for c in result.columns)
    return {"alarm": result.dataset_drift, "share": result.drift_share, "drifted": result.drifted_columns,
            "unadjusted_alarm": unadjusted / len(result.columns) >= DRIFT_SHARE,
            "warnings": sum(issubclass(w.category, RuntimeWarning) for w in caught)}


def upper_bound(hits: int, total: int) -> float:
    """The one-sided 95% (Clopper-Pearson) upper bound of a rate seen `hits` times in `total`."""
    from scipy.stats import beta

    return 1.0 if hits >= total else float(beta.ppf(0.95, hits + 1, total - hits))


def _summary(nights: list[dict[str, Any]], truth: set[str] | None = None) -> dict[str, Any]:
    alarms = sum(n["alarm"] for n in nights)
    out = {"nights": len(nights), "alarms": alarms, "rate": alarms / len(nights),
           "upper95": upper_bound(alarms, len(nights)), "mean_share": float(np.mean([n["share"] for n in nights])),
           "unadjusted_alarms": sum(n["unadjusted_alarm"] for n in nights),
           "warnings": sum(n["warnings"] for n in nights)}
    if truth is not None:
        out["recall"] = float(np.mean([len(truth & set(n["drifted"])) / len(truth) for n in nights]))
        out["others"] = float(np.mean([len(set(n["drifted"]) - truth) for n in nights]))
    return out


def run_benchmark(sizes: tuple[int, ...] = SIZES, nights: int = NIGHTS, small_nights: int = SMALL_NIGHTS,
                  detect_nights: int = DETECT_NIGHTS, night_rows: int = NIGHT_ROWS, worlds: tuple[str, ...] = WORLDS,
                  scenarios: tuple[str, ...] = SCENARIOS, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """False-alarm rates per world and reference size, detection per scenario and size, before and after."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    started, begun = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.perf_counter()
    results: dict[str, Any] = {
        "benchmark": "alarms", "started": started, "sizes": list(sizes), "night_rows": night_rows,
        "drift_share": DRIFT_SHARE, "small": SMALL, "target_rate": TARGET_RATE, "min_detection": MIN_DETECTION,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "false_alarms": {}, "detection": {}}
    for world in worlds:
        for size in sizes:
            runs: dict[str, list[dict[str, Any]]] = {d: [] for d in DECISIONS}
            count = small_nights if size <= SMALL else nights
            for i in range(count):  # reference and night: the same world, seeds no other night uses
                reference, night = world_rows(world, size, 10_000 + i), world_rows(world, night_rows, 20_000 + i)
                for decision in DECISIONS:
                    runs[decision].append(decide(reference, night, world, decision))
            results["false_alarms"].setdefault(world, {})[str(size)] = {d: _summary(r) for d, r in runs.items()}
            log(f"[alarms] {world:<5} {size:>6,} rows: false alarms " + ", ".join(
                f"{d} {sum(n['alarm'] for n in r)}/{count}" for d, r in runs.items()))
    for scenario in scenarios:
        truth = drifted_columns(scenario)
        for size in sizes:
            runs = {d: [] for d in DECISIONS}
            for i in range(detect_nights):
                reference = world_rows("demo", size, 30_000 + i)
                night = world_rows("demo", night_rows, 40_000 + i, scenario)
                for decision in DECISIONS:
                    runs[decision].append(decide(reference, night, "demo", decision))
            results["detection"].setdefault(scenario, {})[str(size)] = {d: _summary(r, truth) for d, r in runs.items()}
            log(f"[alarms] {scenario:<12} {size:>6,} rows: dataset drift " + ", ".join(
                f"{d} {sum(n['alarm'] for n in r)}/{detect_nights}" for d, r in runs.items()))
    results["seconds"] = time.perf_counter() - begun
    results["verdicts"] = verdicts(results)
    return results


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """After: false alarms <= 5% at every size in every world, no numpy warnings, the crowd day still caught."""
    after = [(w, s, r["adjusted"]) for w, by in results["false_alarms"].items() for s, r in by.items()]
    worst = max(after, key=lambda x: x[2]["rate"], default=None)
    out = []
    if worst is not None:
        w, s, r = worst
        out.append({"target": f"false alarms <= {TARGET_RATE:.0%} at every reference size (after)",
                    "status": "PASS" if r["rate"] <= TARGET_RATE else "FAIL",
                    "detail": f"worst {r['alarms']}/{r['nights']} ({w}, {int(s):,} rows)"})
    warned = sum(r["warnings"] for *_, r in after) + sum(
        r["adjusted"]["warnings"] for by in results["detection"].values() for r in by.values())
    out.append({"target": "no numpy RuntimeWarning (after)", "status": "PASS" if warned == 0 else "FAIL",
                "detail": f"{warned} warnings"})
    crowd = results["detection"].get("crowd", {})
    if crowd:
        s, r = min(crowd.items(), key=lambda x: x[1]["adjusted"]["rate"])
        out.append({"target": f"crowd day caught on >= {MIN_DETECTION:.0%} of nights at every size (after)",
                    "status": "PASS" if r["adjusted"]["rate"] >= MIN_DETECTION else "FAIL",
                    "detail": f"worst {r['adjusted']['alarms']}/{r['adjusted']['nights']} ({int(s):,} rows)"})
    return out


def print_results(results: dict[str, Any]) -> None:
    """The false-alarm table (per world and size, before and after), the detection table, the verdicts."""
    from rich.console import Console
    from rich.table import Table

    from benchmarks import print_verdicts

    console = Console(width=None if sys.stdout.isatty() else 170)
    table = Table(title=f"False alarms of the dataset-drift decision (share >= {results['drift_share']}) on undrifted "
                        f"nights of {results['night_rows']:,} rows", title_justify="left")
    for name in ("world", "reference rows", "before: alarms", "columns flagged", "numpy warnings",
                 "two-sample, unadjusted", "after: alarms", "95% upper", "columns flagged ", "numpy warnings "):
        table.add_column(name, justify="right")
    for world, by in results["false_alarms"].items():
        for size, r in by.items():
            b, a = r["preset"], r["adjusted"]
            table.add_row(world, f"{int(size):,}", f"{b['alarms']}/{b['nights']} ({b['rate']:.0%})",
                          f"{b['mean_share']:.0%}", str(b["warnings"]),
                          f"{a['unadjusted_alarms']}/{a['nights']} ({a['unadjusted_alarms'] / a['nights']:.0%})",
                          f"{a['alarms']}/{a['nights']} ({a['rate']:.0%})", f"{a['upper95']:.1%}",
                          f"{a['mean_share']:.1%}", str(a["warnings"]))
    console.print(table)
    table = Table(title="Detection on the demo's drifted days (before -> after)", title_justify="left")
    for name in ("scenario", "columns moved", "reference rows", "dataset drift", "moved columns found",
                 "other columns flagged"):
        table.add_column(name, justify="right")
    for scenario, by in results["detection"].items():
        for size, r in by.items():
            b, a = r["preset"], r["adjusted"]
            table.add_row(scenario, str(len(drifted_columns(scenario))), f"{int(size):,}",
                          f"{b['alarms']}/{b['nights']} -> {a['alarms']}/{a['nights']}",
                          f"{b['recall']:.0%} -> {a['recall']:.0%}", f"{b['others']:.1f} -> {a['others']:.1f}")
    console.print(table)
    console.print(f"columns flagged: mean share of columns flagged per night; two-sample, unadjusted: after's tests, "
                  f"each p-value against 0.05 (no Benjamini-Hochberg); 95% upper: one-sided Clopper-Pearson bound of "
                  f"the false-alarm rate; up to {results['small']:,} reference rows the tests are p-value tests, above "
                  f"them distances (before = after); covariate and category_mix move 3 of 25 columns (share 0.12 < "
                  f"{results['drift_share']}: no dataset drift is the right call, the columns are what counts); "
                  f"{results['seconds']:.0f} s", highlight=False)
    print_verdicts(console, results["verdicts"])
