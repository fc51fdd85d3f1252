"""Fleet benchmark: N small catalogue models' nights run one after another vs the fleet flow, same run, same data.

Every model's measured night does real work: no champion yet, so it reads its labeled window, trains a challenger,
gates it against the floor and promotes it. Each measurement runs in a fresh process (with its own ephemeral Prefect
server) on its own copy of the same landed state; one-time costs (imports, server start, a warm-up night) are
timed apart from the measured nights. Peak memory is the whole process tree's (the flow process and the Prefect
server it starts), sampled from outside, plus each process's exact peak.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Callable

from benchmarks.serving import ROOT, child_env, cpu_seconds, machine_seconds, process_tree

MODELS = 50
QUICK_MODELS = 6
CONCURRENCY = (2, 4)
QUICK_CONCURRENCY = (2,)
ROWS = 1_500  # rows per model per night
QUICK_ROWS = 1_000
NIGHTS = 5  # nights landed per model; the last one is measured (churn labels lag 2 days, windows are 2 days)
PREFIX = "fleet"
WARMUP = ("warmup-fraud",)  # a night run before the clock starts (imports, MLflow DB, first flow)
SAMPLE_SECONDS = 0.25
CHILD_TIMEOUT = 4 * 3600.0
SMALL = {"gate": {"resamples": 200, "absolute_floor": 0.55}, "cv_folds": 2, "window_days": 2}


def model_names(count: int) -> list[str]:
    """The measured models: churn and fraud streams alternating, numbered."""
    return [f"{PREFIX}-{i:03d}-{'churn' if i % 2 == 0 else 'fraud'}" for i in range(count)]


def catalogue_entry(name: str) -> dict[str, Any]:
    """A small catalogue model: churn (labels land 2 days late, by key) or fraud (labels inline, 2 files a night)."""
    folder = "{state_dir}/landing/" + name
    if name.endswith("churn"):
        return {"name": name, "features": folder + "/features/{date:%Y-%m-%d}.parquet", "label": "churned",
                "labels": {"source": folder + "/labels/{date:%Y-%m-%d}.parquet", "key": "customer_id",
                           "lag_days": 2},
                "id_columns": ["customer_id"], "time_column": "event_date",
                "estimator": {"kind": "random_forest", "param_grid": {"n_estimators": [20]}}, **SMALL}
    return {"name": name, "features": folder + "/{date:%Y%m%d}/*.parquet", "label": "is_fraud",
            "id_columns": ["transaction_id"], "time_column": "event_time",
            "estimator": {"kind": "hist_gradient_boosting", "param_grid": {"max_iter": [40]}}, **SMALL}


def measured_night() -> date:
    """The night every model runs: the last one landed."""
    from tasks.data.demo import DEMO_START

    return DEMO_START + timedelta(days=NIGHTS - 1)


def prepare(state: Path, count: int, rows: int) -> Path:
    """Write the catalogue (measured models + warm-up models) and land every model's nights; the catalogue path."""
    import yaml

    from tasks.catalogue.schema import load_catalogue
    from tasks.data.demo import DEMO_START, land_demo_night

    state.mkdir(parents=True, exist_ok=True)
    path = state / "models.yaml"
    names = [*model_names(count), *WARMUP]
    path.write_text(yaml.safe_dump({"models": [catalogue_entry(n) for n in names]}, sort_keys=False))
    for seed, model in enumerate(load_catalogue(path).models):
        for night in range(NIGHTS):
            land_demo_night(model, DEMO_START + timedelta(days=night), state, rows=rows, seed=seed)
    return path


def check_rows(rows: list[dict[str, Any]], names: list[str]) -> None:
    """Every measured model ran once, Completed, promoted and left a champion; RuntimeError naming the others."""
    by_name = {r["model_name"]: r for r in rows}
    bad = [f"{n}: missing" for n in names if n not in by_name]
    bad += [f"{r['model_name']}: {r['state']} {r.get('action')} champion={r.get('champion')} "
            f"registry={r.get('registry_champion')} {r.get('note', '')[:200]}"
            for r in rows if r["state"] != "Completed" or r.get("action") != "promoted" or not r.get("champion")
            or r.get("registry_champion") != r.get("champion")]
    if len(rows) != len(names) or bad:
        raise RuntimeError(f"{len(bad)} of {len(names)} model-nights did not train and promote (ran {len(rows)}): "
                           + "; ".join(bad[:10]))


def memory_mb(pid: int) -> tuple[float, float] | None:
    """A live process's resident MB now and its peak so far (VmRSS, VmHWM); None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            fields = dict(line.split(":", 1) for line in handle if line.startswith(("VmRSS", "VmHWM")))
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        return None


def _sample(proc: subprocess.Popen, timeout: float, what: str = "fleet benchmark child",
            each: Callable[[], None] | None = None) -> tuple[list[tuple[float, float]], dict[int, float]]:
    """Until the child exits: its tree's summed RSS every SAMPLE_SECONDS (time, MB), and each process's peak MB;
    `each` runs at every sample (e.g. to sample another process too)."""
    samples, peaks = [], {}
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"{what} did not finish in {timeout:.0f} s")
        if each is not None:
            each()
        total = 0.0
        for pid in process_tree(proc.pid):
            memory = memory_mb(pid)
            if memory is not None:
                total += memory[0]
                peaks[pid] = max(peaks.get(pid, 0.0), memory[1])
        samples.append((time.time(), total))
        time.sleep(SAMPLE_SECONDS)
    return samples, peaks


def measure(state: Path, catalogue: Path, mode: str, concurrency: int, names: list[str],
            log: Callable[[str], None]) -> dict[str, Any]:
    """One measurement in a fresh process on `state`: timings, CPU, peak RSS (tree sampled, processes exact)."""
    out, err = state / "result.json", state / "child.log"
    env = child_env(state) | {"NIGHTSHIFT_CATALOGUE_PATH": str(catalogue)}
    with err.open("w") as log_file:
        started = time.time()
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.fleet", "--child", mode, str(concurrency),
                                 str(out), *names], cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        samples, peaks = _sample(proc, CHILD_TIMEOUT)
    exited = time.time()
    if proc.returncode != 0 or not out.exists():
        tail = "\n".join(err.read_text(errors="replace").strip().splitlines()[-40:])
        raise RuntimeError(f"fleet benchmark child ({mode}) failed (exit {proc.returncode}):\n{tail}")
    run = json.loads(out.read_text())
    check_rows(run["rows"], names)
    marks = run["marks"]
    measured = [s for s in samples if marks["measured_start"] <= s[0] <= marks["measured_end"]]
    run.update({
        "mode": mode, "concurrency": concurrency, "models": len(names),
        "process_seconds": exited - started, "exit_seconds": exited - marks["end"],
        "startup_seconds": marks["measured_start"] - started,
        "peak_tree_rss_mb": max((s[1] for s in samples), default=0.0),
        "peak_tree_rss_measured_mb": max((s[1] for s in measured), default=0.0),
        "main_maxrss_mb": peaks.get(proc.pid, 0.0),
        "others_maxrss_mb": max((mb for pid, mb in peaks.items() if pid != proc.pid), default=0.0),
        "processes_seen": len(peaks), "samples": len(samples),
    })
    run["seconds_per_night"] = run["measured_seconds"] / len(names)
    run["cores_busy"] = run["measured_cpu_seconds"] / run["measured_seconds"]
    run["others_cores"] = max(0.0, run["machine_cpu_seconds"] - run["measured_cpu_seconds"]) / run["measured_seconds"]
    log(f"[fleet] {mode} x{concurrency}: {run['measured_seconds']:.0f} s for {len(names)} nights "
        f"({run['seconds_per_night']:.1f} s each, {run['cores_busy']:.2f} cores busy), start-up "
        f"{run['startup_seconds']:.0f} s, peak tree RSS {run['peak_tree_rss_mb']:.0f} MB")
    return run


def run_benchmark(count: int, concurrency: tuple[int, ...], rows: int, work: Path,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Land the data once; sequential baseline, then the fleet at each concurrency, each on a fresh copy."""
    names = model_names(count)
    landed = work / "landed"
    start = time.perf_counter()
    prepare(landed, count, rows)
    log(f"[fleet] {count} models (+{len(WARMUP)} warm-up) x {NIGHTS} nights of {rows:,} rows landed in "
        f"{time.perf_counter() - start:.0f} s; measuring night {measured_night()} ...")
    runs = []
    for mode, workers in [("sequential", 1), *(("fleet", c) for c in concurrency)]:
        state = work / f"{mode}-{workers}"
        shutil.copytree(landed, state)
        try:
            run = measure(state, state / "models.yaml", mode, workers, names, log)
            run.pop("rows")
        except RuntimeError as exc:  # kept in the results and printed as FAILED; the command exits non-zero
            log(f"[fleet] {mode} x{workers} FAILED: {exc}")
            run = {"mode": mode, "concurrency": workers, "models": count, "error": str(exc)[:3000]}
        runs.append(run)
        shutil.rmtree(state, ignore_errors=True)
    base = runs[0]
    for run in runs:
        if "error" not in run and "error" not in base:
            run["speedup"] = base["measured_seconds"] / run["measured_seconds"]
            run["rss_ratio"] = run["peak_tree_rss_mb"] / base["peak_tree_rss_mb"]
    return {"benchmark": "fleet", "models": count, "rows_per_night": rows, "night": str(measured_night()),
            "cores": os.cpu_count(), "runs": runs, "failed": sum("error" in r for r in runs)}


def print_results(results: dict[str, Any]) -> None:
    """One row per measurement (sequential first), the ratios against it, then the one-time costs."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Fleet: {results['models']} small models' first nights (train, gate, promote; "
                        f"{results['rows_per_night']:,} rows/night), {results['cores']} cores, each run a fresh "
                        f"process", title_justify="left")
    for name in ("run", "nights s", "s/night", "speed-up", "CPU s/night", "cores busy", "others' cores",
                 "peak RSS MB", "RSS vs seq", "flow MB", "server MB", "start-up s"):
        table.add_column(name, justify="left" if name == "run" else "right")
    for run in results["runs"]:
        label = "sequential" if run["mode"] == "sequential" else f"fleet x{run['concurrency']}"
        if "error" in run:
            table.add_row(label, "[red]FAILED[/red]", *[""] * 10)
            continue
        table.add_row(label, f"{run['measured_seconds']:.0f}", f"{run['seconds_per_night']:.1f}",
                      f"{run.get('speedup', float('nan')):.2f}x",
                      f"{run['measured_cpu_seconds'] / run['models']:.1f}", f"{run['cores_busy']:.2f}",
                      f"{run['others_cores']:.2f}", f"{run['peak_tree_rss_mb']:.0f}",
                      f"{run.get('rss_ratio', float('nan')):.2f}x", f"{run['main_maxrss_mb']:.0f}",
                      f"{run['others_maxrss_mb']:.0f}", f"{run['startup_seconds']:.0f}")
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    ok = [r for r in results["runs"] if "error" not in r]
    for run in results["runs"]:
        if "error" in run:
            print(f"FAILED {run['mode']} x{run['concurrency']}: {run['error'][:600]}")
    if ok:
        first = ok[0]
        print(f"start-up, once per process and not in 'nights s' ({first['mode']} run): imports "
              f"{first['import_seconds']:.0f} s, Prefect server {first['server_seconds']:.0f} s, {len(WARMUP)} "
              f"warm-up night {first['warmup_seconds']:.0f} s; in every run not FAILED all {results['models']} "
              "models Completed, promoted, champion in the registry")
    print("CPU = the flow process's + the Prefect server's; cores busy = their CPU / wall; others' cores = the rest "
          "of the machine's CPU meanwhile (other jobs distort the timings when it is high); peak RSS = the whole "
          f"tree's (both processes' RSS summed, sampled every {SAMPLE_SECONDS} s); flow / server MB = each one's exact "
          "peak (VmHWM)")
    missed = max((r.get("exited_children_maxrss_mb", 0.0) for r in ok), default=0.0)
    if missed:  # measured: `git version` (MLflow), `uname -p`, `lscpu` (joblib), `file`, a few ms each
        print(f"short-lived commands the flow process runs report up to {missed:.0f} MB ru_maxrss: the pages they "
              "shared with it between fork and exec, not extra memory")
    ranked = [r for r in ok if "speedup" in r]
    if ranked:
        best = max(ranked, key=lambda r: r["speedup"])
        print(f"best: {best['mode']} x{best['concurrency']}: {best['speedup']:.2f}x the sequential speed at "
              f"{best['rss_ratio']:.2f}x its peak RSS")


def child(mode: str, concurrency: int, out: Path, names: list[str]) -> None:
    """Start-up (imports, server, warm-up nights), then the measured nights; timings and rows to `out`."""
    marks: dict[str, float] = {"start": time.time()}
    from prefect.client.orchestration import get_client

    from flows.fleet import FleetParams, fleet
    from flows.model_night import ModelNightParams, model_night
    from nightshift.settings import get_settings
    from tasks.registry.store import TrackingConfig
    from tasks.registry.versions import CHAMPION, get_alias

    marks["imported"] = time.time()
    with get_client(sync_client=True) as client:  # starts the ephemeral server (a subprocess), as a flow would
        client.api_healthcheck()
    marks["server"] = time.time()
    night = measured_night()
    for name in WARMUP:
        warm = model_night(ModelNightParams(model_name=name, night=night))
        if warm.action != "promoted":
            raise RuntimeError(f"warm-up night of {name} ended {warm.action}, not promoted")
    marks["measured_start"] = time.time()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    server_pids = [p for p in process_tree(os.getpid()) if p != os.getpid()]
    server_cpu_before = cpu_seconds(server_pids)
    machine_before, steal_before = machine_seconds()
    load = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    if mode == "sequential":
        for name in names:
            state = model_night(ModelNightParams(model_name=name, night=night), return_state=True)
            result = state.result(raise_on_failure=False) if state.is_completed() else None
            rows.append({"model_name": name, "state": state.name, "action": getattr(result, "action", None),
                         "champion": getattr(result, "champion_after", None), "note": state.message or ""})
    else:
        final = fleet(FleetParams(night=night, models=names, concurrency=concurrency), return_state=True)
        rows = [r.model_dump() for r in final.result(raise_on_failure=False)]
    marks["measured_end"] = time.time()
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    server_cpu = cpu_seconds(server_pids) - server_cpu_before
    machine_after, steal_after = machine_seconds()
    cfg = TrackingConfig.from_settings(get_settings())
    for row in rows:
        row["registry_champion"] = get_alias(cfg, row["model_name"], CHAMPION)
    main_cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    marks["end"] = time.time()
    out.write_text(json.dumps({
        "rows": rows, "marks": marks,
        "import_seconds": marks["imported"] - marks["start"], "server_seconds": marks["server"] - marks["imported"],
        "warmup_seconds": marks["measured_start"] - marks["server"],
        "measured_seconds": marks["measured_end"] - marks["measured_start"],
        "measured_cpu_seconds": main_cpu + server_cpu, "main_cpu_seconds": main_cpu, "server_cpu_seconds": server_cpu,
        "machine_cpu_seconds": machine_after - machine_before, "steal_seconds": steal_after - steal_before,
        "loadavg_1min": load,  # RUSAGE_CHILDREN: exited subprocesses only (the live server is not in it)
        "exited_children_maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }, indent=2))


if __name__ == "__main__" and "--child" in sys.argv:
    child(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5:])
