"""Hyper-parameter search benchmark: the challenger's mapped CV candidates sequentially, on threads, on Dask.

Same data (the demo generator), same grid, same folds, same seed, each way in a fresh process: (a) the plain
`cross_validate_candidate` in a loop (no Prefect), the baseline; (b) the train flow's `_cross_validate` on the
ThreadPoolTaskRunner the settings choose by default; (c) the same on prefect-dask's DaskTaskRunner with a local
process cluster (NIGHTSHIFT_TASK_RUNNER=dask), as `python -m flows.train` runs it on Prefect's ephemeral server
(each Dask worker then starts its own temporary server) and with PREFECT_API_URL pointing the workers at the flow's
server (as under a real Prefect server); (d) scikit-learn's GridSearchCV(n_jobs=workers) as an outside
reference. Only the CV is timed; imports, data, the Prefect server, the flow run and the Dask cluster are timed
apart. CPU is the whole process tree's (the flow process, the Prefect server, Dask or loky workers).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from benchmarks.serving import ROOT, child_env, cpu_seconds, machine_seconds, process_tree

ROWS = 50_000  # demo rows generated; 70 % train (test_size 0.3, as the train flow), CV on those
QUICK_ROWS = 10_000
FOLDS = 3
SEED = 42
WORKERS = 2  # the settings' default task_workers: threads, or local Dask worker processes
GRID: dict[str, list[Any]] = {"n_estimators": [100], "min_samples_leaf": [1, 4], "max_depth": [None, 12]}
WAYS = ("sequential", "threads", "dask", "dask-api", "sklearn")
FLOW_WAYS = ("threads", "dask", "dask-api")
DEFAULT_WAY = "threads"  # what SettingsTaskRunner picks when NIGHTSHIFT_TASK_RUNNER is unset
TARGET_SPEEDUP = 1.7
CHILD_TIMEOUT = 1800.0
SAMPLE_SECONDS = 0.25
LABELS = {"sequential": "sequential (plain loop)", "threads": "flow, threads x2 (default)",
          "dask": "flow, Dask x2 (ephemeral API)", "dask-api": "flow, Dask x2, API shared",
          "sklearn": "GridSearchCV n_jobs=2"}


def prepare(rows: int, folds: int, seed: int) -> tuple[Any, Any]:
    """The train flow's CV input: the demo table checked and split (test_size 0.3, not stratified); (frame, spec)."""
    from tasks.data.datasets import DatasetParams, load_dataset_params
    from tasks.data.validate import check_training_data
    from tasks.model.train import split_train_test

    dataset = load_dataset_params(DatasetParams(source="demo", rows=rows), seed=seed)
    data = check_training_data(dataset, test_size=0.3, cv_folds=folds)
    train_df, _ = split_train_test(data.frame, data.spec.label, 0.3, seed, False)
    return train_df, data.spec


def train_params(folds: int, seed: int) -> Any:
    """The TrainParams whose estimator grid, folds and seed every way searches."""
    from flows.train import TrainParams
    from tasks.catalogue.config import EstimatorParams

    return TrainParams(estimator=EstimatorParams(kind="random_forest", param_grid=GRID), cv_folds=folds, seed=seed)


def role(pid: int) -> str:
    """What a process of the tree is: this one (main), the Prefect server, or a worker (Dask, loky)."""
    if pid == os.getpid():
        return "main"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            command = handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "workers"
    return "server" if "prefect.server" in command or "uvicorn" in command else "workers"


def tree_cpu() -> dict[str, float]:
    """CPU seconds so far by role (main, server, workers, reaped) of this process tree, and the machine's busy and
    steal seconds."""
    out = {"main": 0.0, "server": 0.0, "workers": 0.0}
    for pid in process_tree(os.getpid()):
        out[role(pid)] += cpu_seconds([pid])
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["reaped"] = children.ru_utime + children.ru_stime
    out["tree"] = out["main"] + out["server"] + out["workers"] + out["reaped"]
    out["machine"], out["steal"] = machine_seconds()
    return out


def _scores_json(scores: list[Any]) -> list[dict[str, Any]]:
    return [{"index": s.index, "params": s.params, "mean": s.mean, "fold_metrics": s.fold_metrics,
             "seconds": s.seconds} for s in scores]


def _sklearn_search(frame: Any, spec: Any, folds: int, seed: int, workers: int) -> list[dict[str, Any]]:
    """GridSearchCV over the same pipeline, grid and folds; per candidate the same means as ours (roc_auc, accuracy)."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    from tasks.model.train import _set_threads, build_pipeline, candidate_grid

    pipeline = build_pipeline(spec, "random_forest", {}, seed)
    _set_threads(pipeline, 1)
    grid = {f"model__{k}": v for k, v in GRID.items()}
    search = GridSearchCV(pipeline, grid, scoring=["roc_auc", "accuracy"], refit=False, n_jobs=workers,
                          cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed))
    search.fit(frame[spec.features], frame[spec.label].to_numpy())
    res = search.cv_results_
    order = [{f"model__{k}": v for k, v in c.items()} for c in candidate_grid(GRID)]
    out = []
    for index, wanted in enumerate(order):  # ParameterGrid order in both; matched by value to be sure
        at = next(i for i, p in enumerate(res["params"]) if p == wanted)
        out.append({"index": index, "params": {k.removeprefix("model__"): v for k, v in wanted.items()},
                    "mean": {"roc_auc": float(res["mean_test_roc_auc"][at]),
                             "accuracy": float(res["mean_test_accuracy"][at])},
                    "fold_metrics": [{"roc_auc": float(res[f"split{f}_test_roc_auc"][at]),
                                      "accuracy": float(res[f"split{f}_test_accuracy"][at])} for f in range(folds)],
                    "seconds": float(res["mean_fit_time"][at] + res["mean_score_time"][at]) * folds})
    return out


def _flow(rows: int, folds: int, seed: int, marks: dict[str, Any]) -> list[dict[str, Any]]:
    """The train flow's CV step on the settings' task runner, with the Dask cluster (if any) started first."""
    from prefect import flow
    from prefect.context import FlowRunContext

    from flows.runners import SettingsTaskRunner
    from flows.train import _cross_validate

    @flow(name="bench-hpsearch", task_runner=SettingsTaskRunner())
    def hpsearch(rows: int, folds: int, seed: int) -> list[dict[str, Any]]:
        marks["flow_body"] = time.time()
        frame, spec = prepare(rows, folds, seed)
        marks["data_end"] = time.time()
        runner = FlowRunContext.get().task_runner  # type: ignore[union-attr]
        if hasattr(runner, "client"):  # Dask starts its cluster on the first submit: started here, timed apart
            runner.client.wait_for_workers(WORKERS)
        marks["cv_start"], marks["cpu_start"] = time.time(), tree_cpu()
        scores, _ = _cross_validate(frame, spec, train_params(folds, seed))  # applies cv_sample itself
        marks["cv_end"], marks["cpu_end"] = time.time(), tree_cpu()
        marks["runner"] = type(runner).__name__
        return _scores_json(scores)

    return hpsearch(rows, folds, seed)


def child(way: str, rows: int, folds: int, seed: int, out: Path) -> None:
    """One way's measurement in this fresh process: timings, tree CPU and the candidates' scores to `out`."""
    marks: dict[str, Any] = {"start": time.time()}
    machine_before = machine_seconds()[0]
    load = os.getloadavg()[0]
    import sklearn  # noqa: F401  # every way pays it; not in the CV time

    pass

    if way in FLOW_WAYS:
        from prefect.client.orchestration import get_client

        import flows.train  # noqa: F401

        marks["imported"] = time.time()
        with get_client(sync_client=True) as client:  # starts the ephemeral server (a subprocess), as a flow would
            client.api_healthcheck()
        marks["server"] = time.time()
        if way == "dask-api":  # the workers use this server, as under a real one (else each starts its own)
            from prefect.server.api.server import SubprocessASGIServer

            os.environ["PREFECT_API_URL"] = SubprocessASGIServer().api_url
        scores = _flow(rows, folds, seed, marks)
        marks["flow_returned"] = time.time()
    else:
        marks["imported"] = time.time()
        from tasks.model.train import cv_sample

        frame, spec = prepare(rows, folds, seed)
        frame = cv_sample(frame, spec.label, train_params(folds, seed).estimator.search_rows, seed)  # as the flow
        marks["data_end"] = time.time()
        marks["cv_start"], marks["cpu_start"] = time.time(), tree_cpu()
        if way == "sequential":
            from tasks.model.train import candidate_grid, cross_validate_candidate

            scores = _scores_json([cross_validate_candidate(frame, spec, "random_forest", params, folds, seed, i)
                                   for i, params in enumerate(candidate_grid(GRID))])
        else:
            scores = _sklearn_search(frame, spec, folds, seed, WORKERS)
        marks["cv_end"], marks["cpu_end"] = time.time(), tree_cpu()
    marks["end"] = time.time()
    out.write_text(json.dumps({"marks": marks, "scores": scores, "loadavg_1min": load,
                               "machine_cpu_seconds": machine_seconds()[0] - machine_before}, indent=2))


def measure(way: str, rows: int, folds: int, seed: int, work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Run one way in a fresh process (own Prefect home), sampling its tree's memory from outside; its numbers."""
    from benchmarks.fleet import _sample

    state = work / f"{way}-{time.time_ns()}"
    state.mkdir(parents=True)
    out, err = state / "result.json", state / "child.log"
    env = child_env(state) | {"NIGHTSHIFT_TASK_WORKERS": str(WORKERS)}
    if way.startswith("dask"):
        env["NIGHTSHIFT_TASK_RUNNER"] = "dask"
    with err.open("w") as log_file:
        started = time.time()
        proc = subprocess.Popen([sys.executable, "-c", "from benchmarks import hpsearch as m; import sys; "
                                 "m.child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), "
                                 "m.Path(sys.argv[5]))", way, str(rows), str(folds), str(seed), str(out)],
                                cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        samples, peaks = _sample(proc, CHILD_TIMEOUT)
    exited = time.time()
    if proc.returncode != 0 or not out.exists():
        tail = "\n".join(err.read_text(errors="replace").strip().splitlines()[-40:])
        raise RuntimeError(f"hpsearch child ({way}) failed (exit {proc.returncode}):\n{tail}")
    run = json.loads(out.read_text())
    m = run["marks"]
    cv = m["cv_end"] - m["cv_start"]
    cpu = {k: m["cpu_end"][k] - m["cpu_start"][k] for k in m["cpu_start"]}
    during = [mb for t, mb in samples if m["cv_start"] <= t <= m["cv_end"]]
    run.update({
        "way": way, "cv_seconds": cv, "cpu_seconds": cpu["tree"], "cpu_utilisation": cpu["tree"] / cv / WORKERS,
        "cpu_by_role": {k: cpu[k] for k in ("main", "server", "workers", "reaped")},
        "others_cores": max(0.0, cpu["machine"] - cpu["tree"]) / cv, "steal_seconds": cpu["steal"],
        "candidates_seconds": sum(s["seconds"] for s in run["scores"]),
        "peak_tree_rss_cv_mb": max(during, default=0.0), "peak_tree_rss_mb": max((mb for _, mb in samples), default=0),
        "main_maxrss_mb": peaks.get(proc.pid, 0.0), "processes_seen": len(peaks),
        "process_seconds": exited - started, "import_seconds": m["imported"] - m["start"],
        "startup_to_cv_seconds": m["cv_start"] - started,
    })
    if way in FLOW_WAYS:
        run["server_seconds"] = m["server"] - m["imported"]
        run["flow_start_seconds"] = m["flow_body"] - m["server"]  # flow run created and entered, runner entered
        run["data_seconds"] = m["data_end"] - m["flow_body"]
        run["cluster_seconds"] = m["cv_start"] - m["data_end"]  # Dask: LocalCluster + workers up; threads: ~0
        run["flow_end_seconds"] = m["flow_returned"] - m["cv_end"]
    else:
        run["data_seconds"] = m["data_end"] - m["imported"]
    log(f"[hpsearch] {way}: CV {cv:.1f} s, CPU {run['cpu_utilisation']:.0%} of {WORKERS} cores (others meanwhile "
        f"{run['others_cores']:.2f} cores), peak tree RSS "
        f"{run['peak_tree_rss_cv_mb']:.0f} MB, start-up to CV {run['startup_to_cv_seconds']:.1f} s")
    return run


def compare_scores(runs: dict[str, list[dict[str, Any]]], base: str = "sequential") -> dict[str, dict[str, Any]]:
    """Per way against `base`: same candidate chosen (ROC AUC), same per-fold metrics exactly, largest mean difference."""
    def best(scores: list[dict[str, Any]]) -> int:
        return max(scores, key=lambda s: (s["mean"]["roc_auc"], -s["index"]))["index"]

    ref = runs[base]
    out = {}
    for way, scores in runs.items():
        common = [k for k in ("roc_auc", "accuracy", "f1", "log_loss") if k in scores[0]["mean"]]
        diff = max(abs(a["mean"][k] - b["mean"][k]) for a, b in zip(ref, scores, strict=True) for k in common)
        folds_equal = all(fa[k] == fb[k] for a, b in zip(ref, scores, strict=True)
                          for fa, fb in zip(a["fold_metrics"], b["fold_metrics"], strict=True) for k in common)
        out[way] = {"chosen": best(scores), "same_choice": best(scores) == best(ref), "max_mean_diff": diff,
                    "identical": folds_equal and diff == 0.0 and best(scores) == best(ref), "metrics": common,
                    "roc_auc_means": [s["mean"]["roc_auc"] for s in scores]}
    return out


def run_benchmark(rows: int, repeat: int, work: Path, ways: tuple[str, ...] = WAYS,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every way `repeat` times, order alternating, each in a fresh process; the fastest CV of each way kept."""
    from tasks.model.train import candidate_grid

    log(f"[hpsearch] {len(candidate_grid(GRID))} candidates x {FOLDS} folds on {rows:,} demo rows "
        f"(70 % train), {repeat} round(s), ways: {', '.join(ways)}")
    all_runs: dict[str, list[dict[str, Any]]] = {w: [] for w in ways}
    for r in range(repeat):
        for way in (ways if r % 2 == 0 else tuple(reversed(ways))):
            all_runs[way].append(measure(way, rows, FOLDS, SEED, work, log))
    kept = {w: min(runs, key=lambda run: run["cv_seconds"]) for w, runs in all_runs.items()}
    base = kept.get("sequential")
    for run in kept.values():
        if base is not None:
            run["speedup"] = base["cv_seconds"] / run["cv_seconds"]
    ref = "sequential" if base else ways[0]
    scores = compare_scores({w: runs[0]["scores"] for w, runs in all_runs.items()}, base=ref)
    same_everywhere = all(  # every round of every flow way, not only the first, against the reference's first
        compare_scores({"ref": all_runs[ref][0]["scores"], "run": run["scores"]}, "ref")["run"]["identical"]
        for w in ways if w != "sklearn" for run in all_runs[w])
    loads = [run["loadavg_1min"] for runs in all_runs.values() for run in runs]
    results = {"benchmark": "hpsearch", "rows": rows, "train_rows": int(rows * 0.7 + 0.5), "folds": FOLDS,
               "grid": GRID, "seed": SEED, "workers": WORKERS, "cores": os.cpu_count(), "repeat": repeat,
               "default": DEFAULT_WAY, "kept": "fastest CV of each way",
               "runs": {w: {k: v for k, v in run.items() if k != "scores"} for w, run in kept.items()},
               "all_cv_seconds": {w: [run["cv_seconds"] for run in runs] for w, runs in all_runs.items()},
               "all_runs": {w: [{k: v for k, v in run.items() if k != "scores"} for run in runs]
                            for w, runs in all_runs.items()},  # every round's numbers (steal, others' cores, ...)
               "scores": scores, "flow_ways_identical_every_round": same_everywhere,
               "candidates": kept[ways[0]]["scores"], "loadavg_1min": [min(loads), max(loads)]}
    results["verdicts"] = verdicts(results)
    return results


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The target (the default way >= 1.7x sequential), identical scores, and the other ways as reported ratios."""
    runs, scores, out = results["runs"], results["scores"], []
    default = runs.get(results["default"], {})
    if "speedup" in default:
        ok = default["speedup"] >= TARGET_SPEEDUP
        out.append({"kind": "target", "target": f">= {TARGET_SPEEDUP}x faster than sequential with the default "
                    f"({LABELS[results['default']]})", "status": "PASS" if ok else "FAIL",
                    "detail": f"{default['speedup']:.2f}x ({runs['sequential']['cv_seconds']:.1f} s -> "
                              f"{default['cv_seconds']:.1f} s)"})
    flow_ways = [w for w in scores if w != "sklearn"]
    same = all(scores[w]["identical"] for w in flow_ways) and results["flow_ways_identical_every_round"]
    out.append({"kind": "target", "target": "identical CV scores (" + ", ".join(flow_ways) + ")",
                "status": "PASS" if same else "FAIL",
                "detail": ("same candidate, every fold's metrics equal in every round" if same else
                           "; ".join(f"{w}: chose {s['chosen']}, max mean diff {s['max_mean_diff']:.3g}"
                                     for w, s in scores.items()))})
    for way in ("dask", "dask-api", "sklearn"):
        if way in runs and "speedup" in runs[way]:
            extra = ""
            if way == "sklearn":
                s = scores["sklearn"]
                extra = (f"; scores {'identical' if s['identical'] else 'differ'} (ROC AUC, accuracy; max mean diff "
                         f"{s['max_mean_diff']:.2g}, same choice: {s['same_choice']})")
            out.append({"kind": "reported", "target": f"{LABELS[way]} vs sequential",
                        "status": f"{runs[way]['speedup']:.2f}x",
                        "detail": f"{runs[way]['cv_seconds']:.1f} s{extra}"})
    return out


def print_results(results: dict[str, Any]) -> None:
    """The table (CV seconds, speed-up, CPU, peak RSS, start-up apart), the candidates, the verdicts."""
    from rich.console import Console
    from rich.table import Table

    from benchmarks import print_verdicts

    console = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title=f"Hyper-parameter search: {len(results['candidates'])} RandomForest candidates x "
                        f"{results['folds']} folds on {results['train_rows']:,} training rows (demo, "
                        f"{results['rows']:,} generated), {results['cores']} cores, each way a fresh process, "
                        f"fastest of {results['repeat']}", title_justify="left")
    for name in ("way", "CV s", "speed-up", "CPU util", "CPU s main/server/workers", "others' cores",
                 "candidates' own s", "peak RSS MB", "main MB", "server s", "flow start s", "cluster s", "all CV s"):
        table.add_column(name, justify="left" if name == "way" else "right")
    for way, run in results["runs"].items():
        opt = {k: f"{run[k]:.1f}" if k in run else "-" for k in ("server_seconds", "flow_start_seconds",
                                                                 "cluster_seconds")}
        table.add_row(LABELS.get(way, way), f"{run['cv_seconds']:.1f}", f"{run.get('speedup', float('nan')):.2f}x",
                      f"{run['cpu_utilisation']:.0%}",
                      "/".join(f"{run['cpu_by_role'][k]:.0f}" for k in ("main", "server", "workers"))
                      if "cpu_by_role" in run else "-",  # older result files have neither
                      f"{run['others_cores']:.2f}" if "others_cores" in run else "-",
                      f"{run['candidates_seconds']:.0f}" if "candidates_seconds" in run else "-",
                      f"{run['peak_tree_rss_cv_mb']:.0f}",
                      f"{run['main_maxrss_mb']:.0f}", opt["server_seconds"], opt["flow_start_seconds"],
                      opt["cluster_seconds"], " / ".join(f"{s:.1f}" for s in results["all_cv_seconds"][way]))
    console.print(table)
    cands = Table(title="Candidates (mean CV ROC AUC per way)", title_justify="left")
    cands.add_column("candidate")
    for way in results["scores"]:
        cands.add_column(way, justify="right")
    for c in results["candidates"]:
        cands.add_row(json.dumps(c["params"]), *(f"{s['roc_auc_means'][c['index']]:.6f}"
                                                 + (" *" if s["chosen"] == c["index"] else "")
                                                 for s in results["scores"].values()))
    console.print(cands)
    print(f"CV s = the candidates' CV only; CPU util = the process tree's CPU seconds during it / wall / "
          f"{results['workers']} (flow process, Prefect server, Dask or loky workers; exited ones too); others' cores = "
          "the rest of the machine's CPU during the CV / wall (other jobs); candidates' own s = the candidates' CV "
          "times summed as each measured itself (GridSearchCV: fit + score times); peak RSS = the tree's summed "
          f"RSS during the CV (sampled every {SAMPLE_SECONDS} s); main MB = the main process's peak; server s = "
          "the ephemeral Prefect server's start, flow start s = the flow run created and entered, cluster s = the "
          "Dask LocalCluster and its workers up; none of them in CV s. * = the chosen candidate. 1-min load average "
          f"at each start: {results['loadavg_1min'][0]:.2f}-{results['loadavg_1min'][1]:.2f}")
    print_verdicts(console, results["verdicts"])
