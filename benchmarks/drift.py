"""Drift benchmark: the nightly drift step (Evidently's per-column tests; the preset only for a drift night's HTML)
vs the step as it was (Evidently's DataDriftPreset deciding), bare scipy, and full-data Evidently."""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from benchmarks import save_results

if TYPE_CHECKING:
    import pandas as pd

    from tasks.data.demo import DemoDrift

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROWS = (10_000, 100_000, 1_000_000)
QUICK_ROWS = (100_000,)
SCENARIOS = ("no_drift", "covariate", "category_mix")
KINDS = ("scipy", "nightshift", "preset", "full")
THRESHOLD = 0.1  # Evidently's default for both distances (drift when score >= threshold)
WASSERSTEIN = "Wasserstein distance (normed)"  # Evidently's display names, as compute_drift reports them
JENSEN_SHANNON = "Jensen-Shannon distance"
# Repeated with --repeat, alternating (best time kept, every time saved); full-data Evidently runs once.
TIMED_KINDS = ("scipy", "nightshift", "preset")
TARGET_ROWS = 1_000_000
TARGET_RATIO = 1.5  # the whole step (HTML included) vs scipy on full data, at 1M rows
TARGET_RSS_MB = 2048.0
DECIDE_ROWS = 100_000
DECIDE_RATIO = 3.0  # deciding (every night's cost; a drift night adds the HTML) vs scipy, at 100k rows


def scenario_drift(name: str) -> DemoDrift:
    """The drift injected into the current day for one benchmark scenario."""
    from tasks.data.demo import DemoDrift

    if name == "no_drift":
        return DemoDrift()
    if name == "covariate":
        return DemoDrift(covariate_shift=0.5)  # the default three drifted numeric columns
    if name == "category_mix":
        return DemoDrift(category_mix=0.5)
    raise ValueError(f"unknown scenario {name!r}; use one of {', '.join(SCENARIOS)}")


def feature_columns() -> tuple[list[str], list[str]]:
    """Numeric and categorical feature columns of the demo table (no label, no date)."""
    from tasks.data.demo import DEMO_CATEGORICAL, DEMO_NUMERIC

    return list(DEMO_NUMERIC), list(DEMO_CATEGORICAL)


def make_data(rows: int, scenario: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference (day 0) and current (day 1, drifted per scenario) demo tables of `rows` rows each."""
    from tasks.data.demo import generate_demo

    reference = generate_demo(rows, seed=1, day=0)
    current = generate_demo(rows, seed=1, day=1, drift=scenario_drift(scenario))
    return reference, current


def scipy_drift(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str],
                threshold: float = THRESHOLD) -> list[dict[str, Any]]:
    """Evidently's large-data tests done directly on full data: normed Wasserstein and Jensen-Shannon distance."""
    import numpy as np
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import wasserstein_distance

    columns: list[dict[str, Any]] = []
    for col in numeric:
        ref = reference[col].to_numpy(dtype=np.float64)
        cur = current[col].to_numpy(dtype=np.float64)
        ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]  # Evidently drops NaN/inf first
        score = float(wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001))
        columns.append({"column": col, "method": WASSERSTEIN, "score": score, "threshold": threshold,
                        "drifted": score >= threshold})
    for col in categorical:
        ref_counts = reference[col].value_counts()
        cur_counts = current[col].value_counts()
        keys = ref_counts.index.union(cur_counts.index)
        p = ref_counts.reindex(keys, fill_value=0).to_numpy(dtype=np.float64)
        q = cur_counts.reindex(keys, fill_value=0).to_numpy(dtype=np.float64)
        score = float(jensenshannon(p / p.sum(), q / q.sum()))
        columns.append({"column": col, "method": JENSEN_SHANNON, "score": score, "threshold": threshold,
                        "drifted": score >= threshold})
    return columns


def _rss_mb() -> float:
    """Current resident set size of this process in MB."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    """Peak resident set size of this process so far in MB (ru_maxrss is in KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux clear_refs 5) so the next peak is the drift step's own."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def run_child(kind: str, rows: int, scenario: str) -> dict[str, Any]:
    """One measurement in this (fresh) process: imports, data, then the timed drift computation."""
    start = time.perf_counter()
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import scipy.spatial.distance  # noqa: F401
    import scipy.stats  # noqa: F401

    import tasks.data.datasets  # noqa: F401  (imports prefect)

    if kind != "scipy":
        import evidently  # noqa: F401
        from evidently import DataDefinition, Dataset, Report  # noqa: F401
        from evidently.presets import DataDriftPreset  # noqa: F401

        import tasks.monitoring.drift  # noqa: F401
    import_seconds = time.perf_counter() - start

    start = time.perf_counter()
    reference, current = make_data(rows, scenario)
    numeric, categorical = feature_columns()
    data_seconds = time.perf_counter() - start
    gc.collect()
    peak_data_mb, rss_after_data_mb = _peak_mb(), _rss_mb()
    reset = _reset_peak()

    extra: dict[str, Any] = {}
    start = time.perf_counter()
    if kind == "scipy":
        columns = scipy_drift(reference, current, numeric, categorical)
        seconds = time.perf_counter() - start
    else:
        from tasks.monitoring.drift import compute_drift, compute_drift_preset

        if kind in ("nightshift", "preset"):  # as the monitor runs it (report "on_drift"), and as it did before
            step = compute_drift if kind == "nightshift" else compute_drift_preset
            with tempfile.TemporaryDirectory(prefix="nightshift-bench-") as tmp:
                result = step(reference, current, numeric, categorical, report_dir=Path(tmp))
                seconds = time.perf_counter() - start
                extra["report_mb"] = sum(Path(p).stat().st_size for p in (result.html_path, result.json_path)
                                         if p) / 2**20
            extra.update(report_seconds=result.report_seconds, html=result.html_path is not None)
        elif kind == "full":
            result = compute_drift_preset(reference, current, numeric, categorical, sample_cap=None)
            seconds = time.perf_counter() - start
        else:
            raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
        columns = [{"column": c.column, "method": c.method, "score": c.score, "threshold": c.threshold,
                    "drifted": c.drifted} for c in result.columns]
        extra["any_drift"] = result.any_drift
        extra["decide_seconds"] = seconds - result.report_seconds  # the HTML a drift night adds, left out
        extra.update(inner_seconds=result.seconds, sampled_reference_rows=result.sampled_reference_rows,
                     sampled_current_rows=result.sampled_current_rows)
    peak_step_mb = _peak_mb() if reset else None
    return {
        "kind": kind, "rows": rows, "scenario": scenario, "seconds": seconds, "import_seconds": import_seconds,
        "data_seconds": data_seconds, "rss_after_data_mb": rss_after_data_mb, "peak_data_mb": peak_data_mb,
        "peak_step_mb": peak_step_mb, "peak_rss_mb": max(peak_data_mb, peak_step_mb or 0.0, _peak_mb()),
        "columns": columns, **extra,
    }


def child_env() -> dict[str, str]:
    """Environment for measurement children: repo importable, Prefect state kept out of the user's home."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    if "PREFECT_HOME" not in env and "PREFECT_API_URL" not in env:
        env["PREFECT_HOME"] = str(Path(tempfile.gettempdir()) / "nightshift-bench-prefect")
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("DO_NOT_TRACK", "1")
    return env


def measure(kind: str, rows: int, scenario: str) -> dict[str, Any]:
    """Run one measurement in a fresh subprocess and return its JSON result (last stdout line)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.drift", "--child", kind, "--rows", str(rows), "--scenario", scenario],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-30:])
        raise RuntimeError(f"{kind} child for {rows} rows / {scenario} failed (exit {proc.returncode}):\n{tail}")
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"{kind} child for {rows} rows / {scenario} printed no result")
    result = json.loads(lines[-1])
    result["wall_seconds"] = time.perf_counter() - start
    return result


def compare(candidate: list[dict[str, Any]], reference: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-column decision agreement and score differences of `candidate` against `reference`."""
    ref_by_col = {c["column"]: c for c in reference}
    disagreements: list[dict[str, Any]] = []
    method_mismatches: list[str] = []
    agree, max_diff, max_diff_col = 0, 0.0, None
    for col in candidate:
        ref = ref_by_col.get(col["column"])
        if ref is None:
            disagreements.append({"column": col["column"], "score": col["score"], "reference_score": None,
                                  "drifted": col["drifted"], "reference_drifted": None})
            continue
        if col["method"] != ref["method"]:
            method_mismatches.append(f"{col['column']}: {col['method']} vs {ref['method']}")
        diff = abs(col["score"] - ref["score"])
        if diff > max_diff:
            max_diff, max_diff_col = diff, col["column"]
        if col["drifted"] == ref["drifted"]:
            agree += 1
        else:
            disagreements.append({"column": col["column"], "score": col["score"], "reference_score": ref["score"],
                                  "drifted": col["drifted"], "reference_drifted": ref["drifted"]})
    missing = sorted(set(ref_by_col) - {c["column"] for c in candidate})
    return {"agree": agree, "total": len(ref_by_col), "disagreements": disagreements, "missing": missing,
            "method_mismatches": method_mismatches, "max_abs_score_diff": max_diff, "max_diff_column": max_diff_col}


def _drifted(columns: list[dict[str, Any]]) -> list[str]:
    return [c["column"] for c in columns if c["drifted"]]


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of repeated measurements, with every run's time and the worst peak RSS kept."""
    best = dict(min(runs, key=lambda m: m["seconds"]))
    best["repeat_seconds"] = [m["seconds"] for m in runs]
    best["repeat_decide_seconds"] = [m.get("decide_seconds", m["seconds"]) for m in runs]
    best["decide_seconds"] = min(best["repeat_decide_seconds"])
    best["peak_rss_mb"] = max(m["peak_rss_mb"] for m in runs)
    return best


def _ratios(entry: dict[str, Any]) -> None:
    """Best-of ratios against scipy (and their spread over the alternating runs, paired in order)."""
    scipy = entry["scipy"]
    pairs = list(zip(entry["nightshift"]["repeat_decide_seconds"], scipy["repeat_seconds"]))
    entry["ratio"] = entry["nightshift"]["decide_seconds"] / scipy["seconds"]
    entry["ratio_pairs"] = [ns / sp for ns, sp in pairs]
    entry["step_ratio"] = entry["nightshift"]["seconds"] / scipy["seconds"]
    if entry.get("preset") is not None:
        entry["preset_ratio"] = entry["preset"]["seconds"] / scipy["seconds"]
        entry["preset_ratio_pairs"] = [p / sp for p, sp in zip(entry["preset"]["repeat_seconds"],
                                                                scipy["repeat_seconds"])]
        entry["speedup"] = entry["preset"]["seconds"] / entry["nightshift"]["decide_seconds"]


def run_benchmark(rows_list: list[int], scenarios: list[str], *, skip_full: bool = False, repeat: int = 1,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every size x scenario x kind, each in its own subprocess, and compare decisions."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    # scipy, nightshift and the preset alternate, so a load change on the machine hits them alike.
    order = [k for _ in range(max(repeat, 1)) for k in TIMED_KINDS] + ([] if skip_full else ["full"])
    results: dict[str, Any] = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "targets": {"rows": TARGET_ROWS, "ratio": TARGET_RATIO, "peak_rss_mb": TARGET_RSS_MB,
                    "decide_rows": DECIDE_ROWS, "decide_ratio": DECIDE_RATIO},
        "skip_full": skip_full, "repeat": max(repeat, 1), "sizes": {},
    }
    for rows in rows_list:
        size: dict[str, Any] = {}
        for scenario in scenarios:
            runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
            for kind in order:
                log(f"[bench] {rows:>9,} rows  {scenario:<13} {kind:<10} ...")
                m = measure(kind, rows, scenario)
                html = f" (HTML {m['report_seconds']:.2f} s)" if m.get("report_seconds") else ""
                log(f"[bench] {rows:>9,} rows  {scenario:<13} {kind:<10} {m['seconds']:7.2f} s{html}  "
                    f"peak {m['peak_rss_mb']:7.0f} MB  drifted {_drifted(m['columns'])}")
                runs[kind].append(m)
            entry: dict[str, Any] = {kind: _best(r) if r else None for kind, r in runs.items()}
            _ratios(entry)
            entry["nightshift_vs_preset"] = compare(entry["nightshift"]["columns"], entry["preset"]["columns"])
            if entry["full"] is not None:
                entry["nightshift_vs_full"] = compare(entry["nightshift"]["columns"], entry["full"]["columns"])
                entry["scipy_vs_full"] = compare(entry["scipy"]["columns"], entry["full"]["columns"])
            entry["nightshift_vs_scipy"] = compare(entry["nightshift"]["columns"], entry["scipy"]["columns"])
            size[scenario] = entry
        results["sizes"][str(rows)] = size
    results["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results["verdicts"] = verdicts(results)
    return results


def _identical(cmp: dict[str, Any]) -> bool:
    return cmp["agree"] == cmp["total"] and not cmp["missing"] and not cmp["method_mismatches"] \
        and cmp["max_abs_score_diff"] <= 1e-9


def verdicts(results: dict[str, Any]) -> list[dict[str, str]]:
    """PASS/FAIL (or NOT MEASURED) for each target at its size."""
    out: list[dict[str, str]] = []
    decide = results["sizes"].get(str(DECIDE_ROWS))
    if decide:
        ratios = {s: e["ratio"] for s, e in decide.items()}
        worst = max(ratios, key=ratios.get)
        out.append({"target": "decision time ratio", "status": "PASS" if ratios[worst] <= DECIDE_RATIO else "FAIL",
                    "detail": f"nightshift deciding/scipy at {DECIDE_ROWS:,} rows: max {ratios[worst]:.2f}x ({worst}), "
                              f"target <= {DECIDE_RATIO}x"})
    else:
        out.append({"target": "decision time ratio", "status": "NOT MEASURED",
                    "detail": f"{DECIDE_ROWS:,} rows not run"})
    same = {f"{int(rows):,}/{s}": _identical(e["nightshift_vs_preset"])
            for rows, size in results["sizes"].items() for s, e in size.items()}
    out.append({"target": "same decisions as the preset", "status": "PASS" if all(same.values()) else "FAIL",
                "detail": "method, score (|diff| <= 1e-9) and verdict of every column, nightshift vs DataDriftPreset "
                          f"on the same samples: {sum(same.values())}/{len(same)} size/scenario runs identical"
                          + "".join(f"; differs: {k}" for k, ok in same.items() if not ok)})
    size = results["sizes"].get(str(TARGET_ROWS))
    label = f"{TARGET_ROWS:,}"
    if not size:
        return out + [{"target": name, "status": "NOT MEASURED", "detail": f"{label} rows not run"}
                      for name in ("time ratio", "peak RSS", "decision agreement")]
    ratios = {s: e["step_ratio"] for s, e in size.items()}
    worst_ratio = max(ratios, key=ratios.get)
    peaks = {s: e["nightshift"]["peak_rss_mb"] for s, e in size.items()}
    worst_peak = max(peaks, key=peaks.get)
    out += [
        {"target": "time ratio", "status": "PASS" if ratios[worst_ratio] <= TARGET_RATIO else "FAIL",
         "detail": f"nightshift step (HTML on drift)/scipy at {label} rows: max {ratios[worst_ratio]:.2f}x "
                   f"({worst_ratio}), target <= {TARGET_RATIO}x"},
        {"target": "peak RSS", "status": "PASS" if peaks[worst_peak] <= TARGET_RSS_MB else "FAIL",
         "detail": f"nightshift child at {label} rows: max {peaks[worst_peak]:.0f} MB ({worst_peak}), "
                   f"target <= {TARGET_RSS_MB:.0f} MB"},
    ]
    if any("nightshift_vs_full" not in e for e in size.values()):
        out.append({"target": "decision agreement", "status": "NOT MEASURED",
                    "detail": "full-data Evidently skipped (--skip-full)"})
    else:
        agreements = {s: e["nightshift_vs_full"] for s, e in size.items()}
        ok = all(a["agree"] == a["total"] and not a["missing"] for a in agreements.values())
        detail = ", ".join(f"{s} {a['agree']}/{a['total']}" for s, a in agreements.items())
        out.append({"target": "decision agreement", "status": "PASS" if ok else "FAIL",
                    "detail": f"nightshift (sampled) vs full-data Evidently at {label} rows: {detail}"})
    return out


def _agree_text(cmp: dict[str, Any] | None) -> str:
    if cmp is None:
        return "-"
    text = f"{cmp['agree']}/{cmp['total']}"
    return text if cmp["agree"] == cmp["total"] and not cmp["missing"] else f"[red]{text}[/red]"


def _spread(values: list[float], unit: str) -> str:
    return f"{min(values):.2f}{unit}" if len(values) == 1 else f"{min(values):.2f}-{max(values):.2f}{unit}"


def print_results(results: dict[str, Any]) -> None:
    """Tables per size (times, ratios, RSS, agreement, score differences), spreads, disagreements, the verdicts."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 220)
    for rows, size in results["sizes"].items():
        n = int(rows)
        table = Table(title=f"Drift benchmark: {n:,} rows x 25 features per side (best of {results['repeat']})",
                      title_justify="left")
        for name in ("scenario", "scipy s", "ns decide s", "ns +HTML s", "preset s", "decide/scipy", "step/scipy",
                     "preset/scipy", "preset/decide", "ns = preset", "ns vs full", "max|Δ| ns-full", "ns peak MB",
                     "drifted ns/full/scipy"):
            table.add_column(name, justify="left" if name == "scenario" else "right")
        for scenario, e in size.items():
            ns, sp, pr, full = e["nightshift"], e["scipy"], e.get("preset"), e["full"]
            ratio = f"{e['ratio']:.2f}x"
            if n == DECIDE_ROWS and e["ratio"] > DECIDE_RATIO:
                ratio = f"[red]{ratio}[/red]"
            step = f"{e['step_ratio']:.2f}x"
            if n == TARGET_ROWS and e["step_ratio"] > TARGET_RATIO:
                step = f"[red]{step}[/red]"
            peak = f"{ns['peak_rss_mb']:.0f}"
            if n == TARGET_ROWS and ns["peak_rss_mb"] > TARGET_RSS_MB:
                peak = f"[red]{peak}[/red]"
            nvp, nvf = e.get("nightshift_vs_preset"), e.get("nightshift_vs_full")
            table.add_row(
                scenario, f"{sp['seconds']:.2f}", f"{ns['decide_seconds']:.2f}",
                f"{ns['seconds']:.2f}" if ns.get("html") else "no HTML", f"{pr['seconds']:.2f}" if pr else "-",
                ratio, step, f"{e['preset_ratio']:.2f}x" if pr else "-", f"{e['speedup']:.1f}x" if pr else "-",
                ("yes" if _identical(nvp) else f"[red]{_agree_text(nvp)}[/red]") if nvp else "-",
                _agree_text(nvf), f"{nvf['max_abs_score_diff']:.4f}" if nvf else "-", peak,
                "/".join(str(len(_drifted(m["columns"]))) if m else "-" for m in (ns, full, sp)),
            )
        console.print(table)
        any_ns = next(iter(size.values()))["nightshift"]
        sampled = any_ns.get("sampled_reference_rows", n)
        note = " (no sampling at this size)" if sampled >= n else ""
        console.print(f"  ns = compute_drift on {sampled:,}-row samples{note}, as the monitor runs it (JSON always, "
                      "Evidently's HTML when a column drifted); preset = compute_drift_preset, the step before (HTML "
                      f"and JSON always); not timed: imports {any_ns['import_seconds']:.1f} s (evidently child), "
                      f"data generation {any_ns['data_seconds']:.1f} s")
        for scenario, e in size.items():
            ns, sp, pr, full = e["nightshift"], e["scipy"], e.get("preset"), e["full"]
            spreads = [f"scipy {_spread(sp['repeat_seconds'], ' s')}",
                       f"ns decide {_spread(ns['repeat_decide_seconds'], ' s')}"]
            if pr:
                spreads.append(f"preset {_spread(pr['repeat_seconds'], ' s')}")
            spreads.append(f"decide/scipy per run {_spread(e['ratio_pairs'], 'x')}")
            if pr:
                spreads.append(f"preset/scipy per run {_spread(e['preset_ratio_pairs'], 'x')}")
            step = (f"step peak {ns['peak_step_mb']:.0f} MB (+{ns['peak_step_mb'] - ns['rss_after_data_mb']:.0f} "
                    f"over data)" if ns.get("peak_step_mb") is not None else "step peak n/a")
            full_mem = f", full-data child peak {full['peak_rss_mb']:.0f} MB" if full else ""
            console.print(f"  {scenario}: {', '.join(spreads)}; ns {step}, files {ns.get('report_mb', 0):.2f} MB"
                          f"{full_mem}; drifted (full) {_drifted(full['columns']) if full else '-'}; "
                          f"drifted (ns) {_drifted(ns['columns'])}")
            for key, name, against in (("nightshift_vs_preset", "nightshift", "preset"),
                                       ("nightshift_vs_full", "nightshift", "full"), ("scipy_vs_full", "scipy", "full")):
                cmp = e.get(key)
                if not cmp:
                    continue
                for d in cmp["disagreements"]:
                    theirs = d["reference_score"] if d["reference_score"] is None else round(d["reference_score"], 4)
                    console.print(f"    [red]disagree[/red] {name} vs {against} on {d['column']}: "
                                  f"{name} {d['score']:.4f} ({'drift' if d['drifted'] else 'ok'}) vs {against} "
                                  f"{theirs} ({'drift' if d['reference_drifted'] else 'ok'})")
                for m in cmp["method_mismatches"]:
                    console.print(f"    method differs ({name} vs {against}): {m}")
                if cmp["missing"]:
                    console.print(f"    [red]missing in {name}[/red] (vs {against}): {', '.join(cmp['missing'])}")
        console.print()
    for v in results["verdicts"]:
        colour = {"PASS": "green", "FAIL": "red"}.get(v["status"], "yellow")
        console.print(f"[{colour}]{v['status']}[/{colour}] {v['target']}: {v['detail']}")


def write_results(results: dict[str, Any]) -> Path:
    """Save the full results as JSON under benchmarks/results/."""
    return save_results("drift", results)


def child_main(argv: list[str] | None = None) -> int:
    """Entry point of a measurement subprocess: prints its result as one JSON line on stdout."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", choices=KINDS, required=True)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--scenario", choices=SCENARIOS, required=True)
    args = parser.parse_args(argv)
    result = run_child(args.child, args.rows, args.scenario)
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(child_main())
