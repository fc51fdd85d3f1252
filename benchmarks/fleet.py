"""Fleet benchmark: N small catalogue models' nights run one after another vs the fleet flow, same run, same data.

Every model's measured night does real work: no champion yet, so it reads its labeled window, trains a challenger,
gates it against the floor and promotes it. Each measurement runs in a fresh process (with its own ephemeral Prefect
server) on its own copy of the same landed state; one-time costs (imports, server start, a warm-up night) are
timed apart from the measured nights. Peak memory is the whole process tree's (the flow process and the Prefect
server it starts), sampled from outside, plus each process's exact peak.

Before/after in one run: every measurement runs twice, once on this checkout's code ("after") and once on a git
worktree of a base commit ("before", `--fleet-baseline-ref`, default BASELINE_REF): the child runs with its working
directory and PYTHONPATH in the worktree, so `python -m benchmarks.fleet --child` imports the worktree's flows and
tasks (the child reports `flows.__file__`, checked here) while the harness (this file) is the same on both sides.
Each arm reports its wall time, its CPU floor (the flow process's + the Prefect server's CPU seconds of the measured
nights over the cores: the wall time if nothing ever waited) and wall / floor, and the flow runs per night (counted
through the Prefect client in the child).
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
BASELINE_REF = "ee6b0c0"  # the base commit before one flow run per night (train and monitor were subflows)
TARGET_RATIO = 1.5  # the fleet at its highest concurrency, after: wall within 1.5x of the CPU floor


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


def baseline_worktree(ref: str, where: Path) -> Path:
    """A detached git worktree of `ref` at `where`, with this harness copied in (the child's timings and counts are
    then the same code on both sides; only flows/ and tasks/ differ)."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), ref], check=True,
                   capture_output=True, text=True)
    shutil.copy2(Path(__file__), where / "benchmarks" / "fleet.py")
    return where


def remove_worktree(where: Path) -> None:
    """Remove the baseline worktree and git's record of it."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)], check=False,
                   capture_output=True)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=False, capture_output=True)


def measure(state: Path, catalogue: Path, mode: str, concurrency: int, names: list[str],
            log: Callable[[str], None], code: Path = ROOT, label: str = "after") -> dict[str, Any]:
    """One measurement in a fresh process on `state` running the code under `code` (this checkout or a baseline
    worktree): timings, CPU and its floor, flow runs, peak RSS (tree sampled, processes exact)."""
    out, err = state / "result.json", state / "child.log"
    env = child_env(state) | {"NIGHTSHIFT_CATALOGUE_PATH": str(catalogue), "PYTHONPATH": str(code)}
    with err.open("w") as log_file:
        started = time.time()
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.fleet", "--child", mode, str(concurrency),
                                 str(out), *names], cwd=code, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        samples, peaks = _sample(proc, CHILD_TIMEOUT)
    exited = time.time()
    if proc.returncode != 0 or not out.exists():
        tail = "\n".join(err.read_text(errors="replace").strip().splitlines()[-40:])
        raise RuntimeError(f"fleet benchmark child ({mode}) failed (exit {proc.returncode}):\n{tail}")
    run = json.loads(out.read_text())
    if not Path(run["flows_file"]).resolve().is_relative_to(code.resolve()):
        raise RuntimeError(f"the {label} child imported flows from {run['flows_file']}, not from {code}")
    check_rows(run["rows"], names)
    marks = run["marks"]
    measured = [s for s in samples if marks["measured_start"] <= s[0] <= marks["measured_end"]]
    cores = os.cpu_count() or 1
    nights_runs = sum(n for flow, n in run["flow_runs"].items() if flow != "fleet")  # the fleet's own run spans all
    run.update({
        "code": label, "code_root": str(code), "mode": mode, "concurrency": concurrency, "models": len(names),
        "floor_seconds": run["measured_cpu_seconds"] / cores,
        "wall_over_floor": run["measured_seconds"] / (run["measured_cpu_seconds"] / cores),
        "flow_runs_per_night": nights_runs / len(names),
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
    log(f"[fleet] {label} {mode} x{concurrency}: {run['measured_seconds']:.0f} s for {len(names)} nights "
        f"({run['seconds_per_night']:.1f} s each, {run['cores_busy']:.2f} cores busy), floor "
        f"{run['floor_seconds']:.0f} s (wall/floor {run['wall_over_floor']:.2f}), {run['flow_runs_per_night']:.1f} "
        f"flow runs a night, start-up {run['startup_seconds']:.0f} s, peak tree RSS {run['peak_tree_rss_mb']:.0f} MB "
        f"(flows from {run['flows_file']})")
    return run


def run_benchmark(count: int, concurrency: tuple[int, ...], rows: int, work: Path,
                  log: Callable[[str], None] = print, baseline_ref: str | None = BASELINE_REF,
                  sequential: bool = True) -> dict[str, Any]:
    """Land the data once; sequential, then the fleet at each concurrency, each on a fresh copy: the baseline's code
    ("before", a worktree of `baseline_ref`; None: skipped) right before this checkout's ("after")."""
    names = model_names(count)
    landed = work / "landed"
    start = time.perf_counter()
    prepare(landed, count, rows)
    log(f"[fleet] {count} models (+{len(WARMUP)} warm-up) x {NIGHTS} nights of {rows:,} rows landed in "
        f"{time.perf_counter() - start:.0f} s; measuring night {measured_night()} ...")
    codes = [("after", ROOT)]
    if baseline_ref:
        codes.insert(0, ("before", baseline_worktree(baseline_ref, work / "before-src")))
    runs = []
    try:
        for mode, workers in [*([("sequential", 1)] if sequential else []), *(("fleet", c) for c in concurrency)]:
            for label, code in codes:
                runs.append(_measured(landed, work / f"{label}-{mode}-{workers}", mode, workers, names, log, code,
                                      label))
    finally:
        if baseline_ref:
            remove_worktree(work / "before-src")
    for label, _ in codes:
        base = next((r for r in runs if r["code"] == label and r["mode"] == "sequential"), None)
        for run in runs:
            if run["code"] == label and base is not None and "error" not in run and "error" not in base:
                run["speedup"] = base["measured_seconds"] / run["measured_seconds"]
                run["rss_ratio"] = run["peak_tree_rss_mb"] / base["peak_tree_rss_mb"]
    return {"benchmark": "fleet", "models": count, "rows_per_night": rows, "night": str(measured_night()),
            "cores": os.cpu_count(), "baseline_ref": baseline_ref, "runs": runs,
            "verdicts": verdicts(runs), "failed": sum("error" in r for r in runs)}


def _measured(landed: Path, state: Path, mode: str, workers: int, names: list[str], log: Callable[[str], None],
              code: Path, label: str) -> dict[str, Any]:
    """One arm on a fresh copy of the landed state; a failure becomes a row with its error."""
    shutil.copytree(landed, state)
    try:
        run = measure(state, state / "models.yaml", mode, workers, names, log, code, label)
        run.pop("rows")
    except RuntimeError as exc:  # kept in the results and printed as FAILED; the command exits non-zero
        log(f"[fleet] {label} {mode} x{workers} FAILED: {exc}")
        run = {"code": label, "mode": mode, "concurrency": workers, "models": len(names), "error": str(exc)[:3000]}
    shutil.rmtree(state, ignore_errors=True)
    return run


def verdicts(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The target: the fleet at its highest concurrency, after, within TARGET_RATIO of its CPU floor (before shown)."""
    fleets = [r for r in runs if r["mode"] == "fleet" and "error" not in r]
    if not fleets:
        return []
    top = max(r["concurrency"] for r in fleets)
    arm = {r["code"]: r for r in fleets if r["concurrency"] == top}
    after, before = arm.get("after"), arm.get("before")
    if after is None:
        return []
    was = (f"; before: {before['measured_seconds']:.0f} s / {before['floor_seconds']:.0f} s = "
           f"{before['wall_over_floor']:.2f}x, {before['flow_runs_per_night']:.1f} flow runs a night") if before else ""
    return [{"status": "PASS" if after["wall_over_floor"] <= TARGET_RATIO else "FAIL",
             "target": f"fleet x{top}: {after['models']} small nights within {TARGET_RATIO}x of the CPU floor",
             "detail": f"after: {after['measured_seconds']:.0f} s wall / {after['floor_seconds']:.0f} s floor = "
                       f"{after['wall_over_floor']:.2f}x, {after['flow_runs_per_night']:.1f} flow runs a night{was}"}]


def print_results(results: dict[str, Any]) -> None:
    """One row per measurement (sequential first), the ratios against it, then the one-time costs."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Fleet: {results['models']} small models' first nights (train, gate, promote; "
                        f"{results['rows_per_night']:,} rows/night), {results['cores']} cores, each run a fresh "
                        f"process", title_justify="left")
    for name in ("code", "run", "nights s", "floor s", "wall/floor", "flow runs/night", "s/night", "speed-up",
                 "CPU s/night", "cores busy", "others' cores", "peak RSS MB", "RSS vs seq", "flow MB", "server MB",
                 "start-up s"):
        table.add_column(name, justify="left" if name in ("code", "run") else "right")
    for run in results["runs"]:
        label = "sequential" if run["mode"] == "sequential" else f"fleet x{run['concurrency']}"
        code = run.get("code", "after")
        if "error" in run:
            table.add_row(code, label, "[red]FAILED[/red]", *[""] * 13)
            continue
        table.add_row(code, label, f"{run['measured_seconds']:.0f}", f"{run['floor_seconds']:.0f}",
                      f"{run['wall_over_floor']:.2f}x", f"{run['flow_runs_per_night']:.1f}",
                      f"{run['seconds_per_night']:.1f}", f"{run['speedup']:.2f}x" if "speedup" in run else "-",
                      f"{run['measured_cpu_seconds'] / run['models']:.1f}", f"{run['cores_busy']:.2f}",
                      f"{run['others_cores']:.2f}", f"{run['peak_tree_rss_mb']:.0f}",
                      f"{run['rss_ratio']:.2f}x" if "rss_ratio" in run else "-", f"{run['main_maxrss_mb']:.0f}",
                      f"{run['others_maxrss_mb']:.0f}", f"{run['startup_seconds']:.0f}")
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(table)
    ok = [r for r in results["runs"] if "error" not in r]
    for run in results["runs"]:
        if "error" in run:
            print(f"FAILED {run.get('code', 'after')} {run['mode']} x{run['concurrency']}: {run['error'][:600]}")
    if ok:
        first = ok[0]
        print(f"start-up, once per process and not in 'nights s' ({first['mode']} run): imports "
              f"{first['import_seconds']:.0f} s, Prefect server {first['server_seconds']:.0f} s, {len(WARMUP)} "
              f"warm-up night {first['warmup_seconds']:.0f} s; in every run not FAILED all {results['models']} "
              "models Completed, promoted, champion in the registry")
    if results.get("baseline_ref"):
        print(f"before = a git worktree of {results['baseline_ref']}, after = this checkout (same harness); floor = "
              "CPU / cores; flow runs/night: the model nights' flow runs (the fleet's own run not counted)")
    print("CPU = the flow process's + the Prefect server's; cores busy = their CPU / wall; others' cores = the rest "
          "of the machine's CPU meanwhile (other jobs distort the timings when it is high); peak RSS = the whole "
          f"tree's (both processes' RSS summed, sampled every {SAMPLE_SECONDS} s); flow / server MB = each one's exact "
          "peak (VmHWM)")
    missed = max((r.get("exited_children_maxrss_mb", 0.0) for r in ok), default=0.0)
    if missed:  # measured: `git version` (MLflow), `uname -p`, `lscpu` (joblib), `file`, a few ms each
        print(f"short-lived commands the flow process runs report up to {missed:.0f} MB ru_maxrss: the pages they "
              "shared with it between fork and exec, not extra memory")
    ranked = [r for r in ok if "speedup" in r and r.get("code", "after") == "after"]
    if ranked:
        best = max(ranked, key=lambda r: r["speedup"])
        print(f"best: {best['mode']} x{best['concurrency']}: {best['speedup']:.2f}x the sequential speed at "
              f"{best['rss_ratio']:.2f}x its peak RSS")
    from benchmarks import print_verdicts

    print_verdicts(console, results.get("verdicts", []))


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
    import flows

    flow_runs = flow_runs_since(marks["measured_start"])
    cfg = TrackingConfig.from_settings(get_settings())
    for row in rows:
        row["registry_champion"] = get_alias(cfg, row["model_name"], CHAMPION)
    main_cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    marks["end"] = time.time()
    out.write_text(json.dumps({
        "rows": rows, "marks": marks, "flows_file": flows.__file__, "flow_runs": flow_runs,
        "import_seconds": marks["imported"] - marks["start"], "server_seconds": marks["server"] - marks["imported"],
        "warmup_seconds": marks["measured_start"] - marks["server"],
        "measured_seconds": marks["measured_end"] - marks["measured_start"],
        "measured_cpu_seconds": main_cpu + server_cpu, "main_cpu_seconds": main_cpu, "server_cpu_seconds": server_cpu,
        "machine_cpu_seconds": machine_after - machine_before, "steal_seconds": steal_after - steal_before,
        "loadavg_1min": load,  # RUSAGE_CHILDREN: exited subprocesses only (the live server is not in it)
        "exited_children_maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }, indent=2))


def flow_runs_since(since: float) -> dict[str, int]:
    """Flow runs started at or after `since` on this process's Prefect API, counted per flow name."""
    from datetime import UTC, datetime

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

    after = FlowRunFilter(start_time=FlowRunFilterStartTime(after_=datetime.fromtimestamp(since, tz=UTC)))
    counts: dict[str, int] = {}
    names: dict[Any, str] = {}
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            page = client.read_flow_runs(flow_run_filter=after, limit=200, offset=offset)
            for run in page:
                if run.flow_id not in names:
                    names[run.flow_id] = client.read_flow(run.flow_id).name
                counts[names[run.flow_id]] = counts.get(names[run.flow_id], 0) + 1
            offset += len(page)
            if len(page) < 200:
                return counts


if __name__ == "__main__" and "--child" in sys.argv:
    child(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5:])
