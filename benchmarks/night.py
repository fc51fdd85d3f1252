"""Night benchmark: the `nightly` flow vs the same night as a plain script (no Prefect runs), same data, same state.

The plain script (`plain_night`) calls the functions under the flow's @task wrappers in the flow's order with the
flow's arguments: monitor (resolve the champion, load it and its reference, load + validate tonight's batch,
drift, quality, MLflow run), load the batch again, retrain reasons, build the window, train (check, split, CV
candidates on 2 threads on the `cv_sample`, fit, test, contract, reference, MLflow logging + register), the
challenger alias, the gate, and promotion (lock, compare-and-swap, alias move, model-server reload, audit). What
it leaves out is Prefect itself: flow/task runs, artifacts, events, logs sent to the API.

Each measurement runs in a fresh process on its own copy of prepared state (a champion trained and promoted on
night 1; tonight's batch carries concept drift, so the measured night detects degradation, trains a challenger
and promotes it) while a model server for the model answers a small request load; its failed requests are counted
and its served version must change to the new champion. Prefect's start-up (the ephemeral server and a trivial
warm-up flow) is timed apart from the measured night.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from benchmarks.serving import HOST, ROOT, child_env, cpu_seconds, machine_seconds, process_tree

if TYPE_CHECKING:
    from flows.monitor import MonitorParams
    from flows.nightly import NightlyParams
    from flows.train import TrainParams
    from tasks.registry.store import TrackingConfig

ROWS = (10_000, 100_000, 1_000_000)
QUICK_ROWS = (5_000,)
QUICK_ESTIMATOR = "small"
MODEL = "night-bench"
SEED = 42
LABEL = "churned"
TARGET_RATIO_AT = 100_000
TARGET_RATIO = 1.25  # flow wall / script wall at 100k rows
TARGET_BIG_WALL = 300.0  # seconds, the 1M night end to end
TARGET_BIG_RATIO = 1.3
BIG = 1_000_000
REQUEST_INTERVAL = 0.05  # the model server's background load: one one-row request every 50 ms
SAMPLE_SECONDS = 0.25
CHILD_TIMEOUT = 3 * 3600.0
CONCEPT = 1.0  # tonight's concept drift: the champion degrades, a challenger trained on tonight wins
ESTIMATORS: dict[str, dict[str, Any]] = {  # --estimator choices: the nightly default, and the levers for big nights
    "default": {"kind": "random_forest", "param_grid": {"n_estimators": [100], "min_samples_leaf": [3]}},
    "rf-nocap": {"kind": "random_forest", "param_grid": {"n_estimators": [100], "min_samples_leaf": [3]},
                 "search_rows": None},
    "rf-maxsamples": {"kind": "random_forest",
                      "param_grid": {"n_estimators": [100], "min_samples_leaf": [3], "max_samples": [0.2]}},
    "small": {"kind": "random_forest", "param_grid": {"n_estimators": [25], "min_samples_leaf": [3]}},
    "hgb": {"kind": "hist_gradient_boosting", "param_grid": {"max_iter": [200]}},
}


# ---------------------------------------------------------------------------------------------------------------
# The plain script: the same night without Prefect runs.
# ---------------------------------------------------------------------------------------------------------------
class Stages:
    """Seconds per step, named like the flow's task runs (summed over repeats)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.lock = threading.Lock()

    @contextmanager
    def time(self, name: str) -> Iterator[None]:
        """Add the block's wall seconds to `name`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            with self.lock:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def call(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """fn(*args, **kwargs), timed under `name`."""
        with self.time(name):
            return fn(*args, **kwargs)


def plain_monitor(params: MonitorParams, cfg: TrackingConfig, t: Stages) -> dict[str, Any]:
    """flows.monitor.monitor's work on a labeled batch file, in its order, as plain calls."""
    from flows.monitor import _report_dir, _run_tags
    from nightshift.errors import DataValidationError
    from nightshift.settings import get_settings
    from tasks.data.datasets import load_dataset_params
    from tasks.data.validate import validate_batch
    from tasks.model.metrics import default_metric, model_classes
    from tasks.monitoring.drift import compute_drift, current_sample
    from tasks.monitoring.estimate import estimate_batch
    from tasks.monitoring.performance import batch_performance
    from tasks.registry.runs import (
        REFERENCE_ARTIFACT,
        finish_run,
        load_frame_artifact,
        log_outputs,
        run_metrics,
        start_run,
    )
    from tasks.registry.versions import load_version, resolve_version

    settings = get_settings()
    name = params.model_name or settings.model_name
    cap = params.sample_rows or settings.drift_sample_rows
    max_drop = settings.max_metric_drop if params.max_metric_drop is None else params.max_metric_drop
    version = t.call("resolve-model-version", resolve_version, cfg, name)
    loaded = t.call("load-model-version", load_version, cfg, name, version.version)
    contract, model = loaded.contract, loaded.model
    reference = t.call("load-reference", load_frame_artifact, cfg, version.run_id, REFERENCE_ARTIFACT)
    batch = t.call("load-dataset", load_dataset_params,
                   params.batch.model_copy(update={"label": params.batch.label or contract.label}), seed=params.seed,
                   served_root=settings.served_dir)
    unlabeled = params.labels_land_later and contract.label not in batch.frame.columns
    report, clean = t.call("validate-batch", validate_batch, batch.frame, contract, batch.source,
                           check_label=not unlabeled)
    run_id = t.call("mlflow-start-run", start_run, cfg, run_name=f"monitor-{name}-v{version.version}",
                    tags=_run_tags(name, version.version, batch))
    try:
        t.call("mlflow-log-outputs", log_outputs, cfg, run_id, texts={"validation/validation.md": report.markdown()},
               metrics=report.metrics())
        if not report.ok:
            raise DataValidationError(report.summary())
        current = t.call("score-drift-sample", current_sample, model, clean, contract.features, cap, params.seed)
        drift = t.call("compute-drift", compute_drift, reference, current.frame, list(contract.numeric),
                       list(contract.categorical), prediction_kind=current.prediction_kind, sample_cap=cap,
                       seed=params.seed, drift_share=params.drift_share_threshold or settings.drift_share_threshold,
                       report_dir=_report_dir(settings, name), report=params.drift_report
                       ).model_copy(update={"current_rows": len(clean)})
        tested = t.call("read-test-metrics", run_metrics, cfg, version.run_id, "test_")
        metric = params.metric or default_metric(contract.task)
        performance = t.call("check-performance", batch_performance, current.frame, current.proba, contract.label,
                             model_classes(model), tested, metric, max_drop, params.floor)
        estimate = None if performance else t.call(
            "estimate-performance-before-labels", estimate_batch, model, reference, contract.features,
            contract.label, current.frame, current.proba, metric, tested, max_drop, params.slice_columns,
            params.seed)
        quality = performance or estimate
        reasons = drift.alert_reasons() + (quality.alert_reasons() if quality else [])
        t.call("mlflow-log-outputs", log_outputs, cfg, run_id,
               metrics={**drift.metrics(), **(performance.metrics() if performance else {}),
                        **(estimate.metrics() if estimate else {}), "alert": float(bool(reasons))},
               files=[(p, "drift") for p in (drift.html_path, drift.json_path) if p],
               texts={"drift/drift.md": drift.markdown()}, tags={"nightshift.alert": str(bool(reasons))})
    except BaseException:
        finish_run(cfg, run_id, "FAILED")
        raise
    t.call("mlflow-finish-run", finish_run, cfg, run_id, "FINISHED")
    return {"label": contract.label, "reasons": reasons, "drift_share": drift.drift_share,
            "validation": report.summary(), "version": version.version, "performance": performance}


def plain_train(params: TrainParams, cfg: TrackingConfig, t: Stages) -> dict[str, Any]:
    """flows.train.train's work as plain calls: CV candidates on a 2-thread pool like the flow's task runner."""
    from concurrent.futures import ThreadPoolExecutor

    from flows.train import _lineage, _run_params, _run_tags, _version_tags
    from nightshift.settings import get_settings
    from tasks.data.contract import infer_contract
    from tasks.data.datasets import load_dataset_params
    from tasks.data.validate import check_training_data
    from tasks.model.train import (
        candidate_grid,
        candidate_threads,
        cross_validate_candidate,
        cv_sample,
        evaluate_model,
        fit_pipeline,
        select_best,
        split_train_test,
        training_metrics,
    )
    from tasks.monitoring.drift import build_reference
    from tasks.registry.runs import CONTRACT_ARTIFACT, REFERENCE_ARTIFACT, finish_run, log_training, start_run
    from tasks.registry.versions import register_model_version

    settings = get_settings()
    name, kind, seed = params.model_name or settings.model_name, params.estimator.kind, params.seed
    dataset = t.call("load-dataset", load_dataset_params, params.dataset, seed=seed)
    data = t.call("check-training-data", check_training_data, dataset, test_size=params.test_size,
                  cv_folds=params.cv_folds, exclude=tuple(params.dataset.exclude_columns))
    spec = data.spec
    train_df, test_df = t.call("split-train-test", split_train_test, data.frame, spec.label, params.test_size, seed,
                               params.stratify)
    run_id = t.call("mlflow-start-run", start_run, cfg, run_name=f"train-{name}", tags=_run_tags(name, dataset))
    try:
        candidates = candidate_grid(params.estimator.param_grid)
        sample = cv_sample(train_df, spec.label, params.estimator.search_rows, seed)
        with t.time("cross-validate"), ThreadPoolExecutor(max_workers=settings.task_workers) as pool:
            n_jobs = candidate_threads(settings.task_workers, len(candidates))
            scores = list(pool.map(lambda i: cross_validate_candidate(sample, spec, kind, candidates[i],
                                                                      params.cv_folds, seed, i, n_jobs),
                                   range(len(candidates))))
        best = select_best(scores, params.selection_metric)
        model = t.call("fit-final-model", fit_pipeline, train_df, spec, kind, best.params, seed)
        test_metrics = t.call("evaluate-on-test", evaluate_model, model, test_df, spec)
        contract = t.call("infer-contract", infer_contract, data.frame, spec, range_tolerance=settings.range_tolerance)
        reference = t.call("build-drift-reference", build_reference, model, test_df, spec.features, spec.label,
                           settings.reference_rows, seed)
        logged = t.call(
            "mlflow-log-training", log_training, cfg, run_id,
            params=_run_params(params, spec.label, len(data.frame), best),
            metrics={**training_metrics(best, test_metrics, len(train_df), len(test_df)), "rows_search": len(sample)},
            datasets=_lineage(dataset, train_df, test_df, spec.label), model=model,
            input_example=train_df[spec.features].head(5),
            artifacts={CONTRACT_ARTIFACT: contract.model_dump(mode="json"),
                       "cv_results.json": [s.__dict__ for s in scores]},
            frames={REFERENCE_ARTIFACT: reference})
        version = t.call("mlflow-register-version", register_model_version, cfg, name, logged,
                         tags={**_version_tags(dataset, contract, test_metrics), **params.version_tags})
    except BaseException:
        finish_run(cfg, run_id, "FAILED")
        raise
    t.call("mlflow-finish-run", finish_run, cfg, run_id, "FINISHED")
    return {"version": version, "test_metrics": test_metrics, "best_params": best.params,
            "cv_metrics": best.mean, "rows_train": len(train_df)}


def plain_promote(cfg: TrackingConfig, name: str, decision: Any, server_url: str | None, token: str | None,
                  fingerprint: str, t: Stages) -> dict[str, Any]:
    """tasks.registry.promote.promote's happy path and undo as plain calls: lock, compare-and-swap, move, reload, audit."""
    from tasks.registry.audit import append_audit, read_audit
    from tasks.registry.locks import model_lock
    from tasks.registry.promote import audit_record, redeploy
    from tasks.registry.versions import alias_state, move_champion, restore_aliases

    target = decision.challenger_version
    with model_lock(cfg, name, "promote"):
        state = t.call("read-aliases", alias_state, cfg, name)
        audit = t.call("read-audit-trail", read_audit, cfg, name)
        if any(r.action == "promote" and r.to_version == target for r in audit) or state.champion == target:
            return {"status": "already-promoted", "champion_after": state.champion}
        if state.champion != decision.champion_version:
            return {"status": "superseded", "champion_after": state.champion}
        before = t.call("move-champion-alias", move_champion, cfg, name, target)
        try:
            deploy = t.call("redeploy-model-server", redeploy, server_url, token, name, bool(decision.schema_changes))
            t.call("append-audit-record", append_audit, cfg,
                   audit_record(name, "promote", decision.reason, state.champion, target, decision, fingerprint))
        except BaseException:
            restore_aliases(cfg, name, before)
            raise
    return {"status": "promoted", "champion_after": target, "deploy": deploy.status}


def plain_night(params: NightlyParams, t: Stages | None = None) -> dict[str, Any]:
    """flows.nightly.nightly's night as plain calls (no flow or task runs): the 'script' side of the benchmark."""
    from flows.monitor import MonitorParams
    from flows.nightly import REASONS_TAG, TRAINING_TAG, WINDOW_TAG, floor_sentence, retrain_reasons, training_key
    from tasks.data.sources import build_window
    from flows.train import TrainParams
    from nightshift.settings import get_settings
    from tasks.data.datasets import DatasetParams, load_dataset_params
    from tasks.registry import store as registry_store
    from tasks.registry.locks import model_lock
    from tasks.registry.promote import gate_challenger, record_refusal
    from tasks.registry.versions import CHALLENGER, alias_state, find_version_by_tag, set_alias

    t = t or Stages()
    settings = get_settings()
    cfg = registry_store.TrackingConfig.from_settings(settings)
    name = params.model_name or settings.model_name
    champion = t.call("read-aliases", alias_state, cfg, name).champion
    tonight = params.batches[-1]
    floor = params.gate.absolute_floor if params.gate.metric == "roc_auc" else None  # as the flow does
    checked = plain_monitor(MonitorParams(batch=tonight, model_name=name, seed=params.seed, floor=floor), cfg, t) \
        if champion else None
    batch = t.call("load-dataset", load_dataset_params,
                   tonight.model_copy(update={"label": tonight.label or (checked and checked["label"])}),
                   seed=params.seed)
    reasons = retrain_reasons(params.force_retrain, params.reason, champion, None)
    reasons += checked["reasons"] if checked else []
    below = floor_sentence(checked["version"], checked["performance"]) if checked else None
    reasons += [f"live model below the floor: {below}"] if below else []
    out: dict[str, Any] = {"champion_before": champion, "retrain_reasons": reasons, "rows": len(batch.frame)}
    if not reasons:
        return out | {"action": "no-retrain", "champion_after": champion}
    if batch.label not in batch.frame.columns or batch.frame[batch.label].notna().sum() < 50:
        return out | {"action": "no-labels", "champion_after": champion}
    history = [t.call("load-dataset", load_dataset_params, p, seed=params.seed).frame
               for p in ([params.reference] if params.reference else []) + params.batches[-params.window:-1]]
    window_path, holdout_path, window_fp = t.call(
        "build-training-window", build_window, history, batch.frame, batch.label, params.holdout_fraction,
        params.seed, settings.state_dir / "windows" / name)
    label = batch.label
    del history, batch
    key = training_key(window_fp, params.estimator, params.cv_folds, params.seed)
    trained: dict[str, Any] = {}
    with model_lock(cfg, name, f"train-{key[:16]}"):
        version = t.call("find-version-by-tag", find_version_by_tag, cfg, name, TRAINING_TAG, key)
        if version is None:
            trained = plain_train(TrainParams(
                dataset=DatasetParams(source=window_path, label=label),
                model_name=name, estimator=params.estimator, cv_folds=params.cv_folds, test_size=0.2, stratify=True,
                seed=params.seed, version_tags={WINDOW_TAG: window_fp, TRAINING_TAG: key,
                                                REASONS_TAG: "; ".join(reasons)[:5000]}), cfg, t)
            version = trained["version"]
    t.call("set-alias", set_alias, cfg, name, CHALLENGER, version)
    decision = t.call("gate-challenger", gate_challenger, cfg, name, version, champion, holdout_path, params.gate)
    out |= {"challenger_version": version, "decision": decision.model_dump(mode="json"), "train": trained}
    if not decision.promote:
        refused = t.call("audit-refusal", record_refusal, cfg, name, decision, window_fp)
        return out | {"action": "refused" if refused else "already-decided", "champion_after": champion}
    token = settings.server_token.get_secret_value() if settings.server_token else None
    promoted = plain_promote(cfg, name, decision, settings.server_url, token, window_fp, t)
    return out | {"action": promoted["status"], "champion_after": promoted["champion_after"],
                  "deploy": promoted.get("deploy")}


# ---------------------------------------------------------------------------------------------------------------
# Prepared state and the night's parameters.
# ---------------------------------------------------------------------------------------------------------------
def night_params(state: Path, rows: int, estimator: str, night: int) -> NightlyParams:
    """Night 1 (no champion: trains, promotes) or night 2 (concept drift: degrades, retrains, promotes)."""
    from flows.nightly import NightlyParams
    from flows.train import EstimatorParams
    from tasks.data.datasets import DatasetParams

    batch = DatasetParams(source=str(state / "landing" / f"night-{night}-{rows}.parquet"), label=LABEL)
    return NightlyParams(model_name=MODEL, batches=[batch], reference=None, window=1,
                         estimator=EstimatorParams(**ESTIMATORS[estimator]), seed=SEED)


def prepare(state: Path, rows: int, estimator: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Land nights 1 and 2 as Parquet and make night 1's champion (plain script, fresh process); its summary."""
    from tasks.data.demo import DemoDrift, generate_demo

    landing = state / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for night, drift in ((1, DemoDrift()), (2, DemoDrift(concept=CONCEPT))):
        generate_demo(rows, seed=SEED + night, day=night, drift=drift).to_parquet(
            landing / f"night-{night}-{rows}.parquet", index=False)
    landed = time.perf_counter() - start
    out = state / "prepare.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.night", "--child", "prepare", str(state), str(rows),
                           estimator, str(out)], cwd=ROOT, env=child_env(state), capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT, check=False)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"preparing {rows:,} rows failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(out.read_text())
    if result["action"] != "promoted":
        raise RuntimeError(f"night 1 at {rows:,} rows ended {result['action']}, not promoted")
    log(f"[night] {rows:,} rows: landed in {landed:.0f} s, champion v{result['champion_after']} in "
        f"{result['seconds']:.0f} s")
    return {"landed_seconds": landed, "champion_seconds": result["seconds"], "champion": result["champion_after"]}


# ---------------------------------------------------------------------------------------------------------------
# The model server under a small load during the night.
# ---------------------------------------------------------------------------------------------------------------
class Load(threading.Thread):
    """One one-row /invocations request every REQUEST_INTERVAL on a keep-alive connection; failures and versions."""

    def __init__(self, port: int, bodies: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.port, self.bodies = port, bodies
        self.stop = threading.Event()
        self.sent = self.failed = 0
        self.first_error: str | None = None
        self.versions: list[tuple[float, str]] = []  # (time, version) whenever the served version changes

    def run(self) -> None:
        """Send until stopped."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
        while not self.stop.is_set():
            body = self.bodies[self.sent % len(self.bodies)]
            self.sent += 1
            try:
                conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                payload = response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {payload[:200]!r}")
                version = str(json.loads(payload)["model_version"])
                if not self.versions or self.versions[-1][1] != version:
                    self.versions.append((time.time(), version))
            except Exception as exc:  # noqa: BLE001 - every failure counts, the load goes on
                self.failed += 1
                self.first_error = self.first_error or repr(exc)[:300]
                conn.close()
                conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
            self.stop.wait(REQUEST_INTERVAL)
        conn.close()


def request_bodies(state: Path, rows: int, features: list[str]) -> list[bytes]:
    """50 one-row request bodies from tonight's batch."""
    import pandas as pd

    from benchmarks.serving import _json_value

    frame = pd.read_parquet(state / "landing" / f"night-2-{rows}.parquet", columns=features).head(50)
    return [json.dumps({"dataframe_split": {"columns": features, "data": [[_json_value(v) for v in row]]}}).encode()
            for row in frame.itertuples(index=False, name=None)]


def served_version(port: int) -> dict[str, Any]:
    """The model server's /version answer."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", "/version")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------------------------
# One measurement: a fresh child process (flow or script) on its own copy of the state, server + load running.
# ---------------------------------------------------------------------------------------------------------------
def measure(state: Path, rows: int, mode: str, estimator: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Start the model server and its load, run one night in a fresh child, sample the child tree's RSS."""
    from benchmarks.fleet import _sample, memory_mb
    from benchmarks.serving import start_server, stop_server

    server, port, server_start = start_server("nightshift", MODEL, state, state / "server.log")
    try:
        before = served_version(port)
        load = Load(port, request_bodies(state, rows, before["features"]))
        load.start()
        out, err = state / "result.json", state / "child.log"
        env = child_env(state) | {"NIGHTSHIFT_SERVER_URL": f"http://{HOST}:{port}"}
        server_peak = [0.0]

        def sample_server() -> None:
            tree = process_tree(server.pid)
            server_peak[0] = max(server_peak[0], sum((memory_mb(p) or (0.0, 0.0))[0] for p in tree))

        with err.open("w") as log_file:
            started = time.time()
            proc = subprocess.Popen([sys.executable, "-m", "benchmarks.night", "--child", mode, str(state), str(rows),
                                     estimator, str(out)], cwd=ROOT, env=env, stdout=log_file,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            samples, peaks = _sample(proc, CHILD_TIMEOUT, f"night child ({mode}, {rows:,} rows)", sample_server)
        exited = time.time()
        time.sleep(1.0)  # a few requests after the swap
        load.stop.set()
        load.join(timeout=15)
        after = served_version(port)
    finally:
        stop_server(server)
    if proc.returncode != 0 or not out.exists():
        tail = "\n".join(err.read_text(errors="replace").strip().splitlines()[-40:])
        raise RuntimeError(f"night child ({mode}, {rows:,} rows) failed (exit {proc.returncode}):\n{tail}")
    run = json.loads(out.read_text())
    marks = run["marks"]
    night_samples = [s for s in samples if marks["measured_start"] <= s[0] <= marks["measured_end"]]
    run.update({
        "mode": mode, "rows": rows, "estimator": estimator, "process_seconds": exited - started,
        "startup_seconds": marks["measured_start"] - started,
        "peak_tree_rss_mb": max((s[1] for s in samples), default=0.0),
        "peak_tree_rss_night_mb": max((s[1] for s in night_samples), default=0.0),
        "main_maxrss_mb": peaks.get(proc.pid, 0.0),
        "others_maxrss_mb": max((mb for pid, mb in peaks.items() if pid != proc.pid), default=0.0),
        "server": {"start_seconds": server_start, "version_before": before["model_version"],
                   "version_after": after["model_version"], "requests": load.sent, "failed": load.failed,
                   "first_error": load.first_error, "versions_seen": [v for _, v in load.versions],
                   "swapped_at": next((ts - marks["measured_start"] for ts, v in load.versions
                                       if v != before["model_version"]), None),
                   "peak_rss_mb": server_peak[0]},
    })
    log(f"[night] {rows:,} rows, {mode}: night {run['measured_seconds']:.1f} s ({run['result']['action']}, "
        f"v{run['server']['version_before']} -> v{run['server']['version_after']} served, "
        f"{load.failed}/{load.sent} requests failed), start-up {run['startup_seconds']:.0f} s, peak tree RSS "
        f"{run['peak_tree_rss_mb']:.0f} MB")
    return run


def check_same(flow_run: dict[str, Any], script_run: dict[str, Any]) -> list[str]:
    """What differs between the two sides' nights (branch, versions, challenger metrics, served swap); [] if none."""
    problems = []
    a, b = flow_run["result"], script_run["result"]
    for key in ("action", "champion_before", "champion_after", "challenger_version"):
        if a.get(key) != b.get(key):
            problems.append(f"{key}: flow {a.get(key)} vs script {b.get(key)}")
    da, db = a.get("decision") or {}, b.get("decision") or {}
    for key in ("challenger", "champion", "promote"):
        if da.get(key) != db.get(key):
            problems.append(f"gate {key}: flow {da.get(key)} vs script {db.get(key)}")
    for run in (flow_run, script_run):
        if run["result"]["action"] != "promoted":
            problems.append(f"{run['mode']}: night ended {run['result']['action']}, not promoted")
        s = run["server"]
        if s["failed"] or s["version_after"] != run["result"].get("champion_after"):
            problems.append(f"{run['mode']}: server {s['failed']} failed requests ({s['first_error']}), serves "
                            f"v{s['version_after']}, champion v{run['result'].get('champion_after')}")
    return problems


def between_steps(runs: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Wall time outside the timed steps, flow minus script, per task + flow run: Prefect's own cost without the
    noise of the steps' compute (valid when steps do not overlap: a one-candidate grid)."""
    gaps = {m: r["measured_seconds"] - sum(r["stages"].values()) for m, r in runs.items()}
    count = runs["flow"]["task_runs"] + runs["flow"]["flow_runs"]
    return {"gap_flow_seconds": gaps["flow"], "gap_script_seconds": gaps["script"],
            "gap_ms_per_run": 1000 * (gaps["flow"] - gaps["script"]) / count}


def run_benchmark(rows_list: list[int], estimator: str, work: Path, log: Callable[[str], None] = print,
                  keep: bool = False) -> dict[str, Any]:
    """Per size: prepare once, then the flow and the script each on a fresh copy; ratios, overheads, checks."""
    sizes = []
    for rows in rows_list:
        prepared = work / f"prepared-{rows}"
        try:
            prep = prepare(prepared, rows, estimator, log)
            runs = {}
            for mode in ("script", "flow"):
                state = work / f"{mode}-{rows}"
                shutil.copytree(prepared, state)
                runs[mode] = measure(state, rows, mode, estimator, log)
                if not keep:
                    shutil.rmtree(state, ignore_errors=True)
            problems = check_same(runs["flow"], runs["script"])
            flow_s, script_s = runs["flow"]["measured_seconds"], runs["script"]["measured_seconds"]
            count = runs["flow"]["task_runs"] + runs["flow"]["flow_runs"]
            sizes.append({"rows": rows, "prepare": prep, "flow": runs["flow"], "script": runs["script"],
                          "ratio": flow_s / script_s, "overhead_seconds": flow_s - script_s,
                          "overhead_ms_per_run": 1000 * (flow_s - script_s) / count, **between_steps(runs),
                          "problems": problems})
            log(f"[night] {rows:,} rows: flow {flow_s:.1f} s / script {script_s:.1f} s = {flow_s / script_s:.2f}x"
                f"{'; DIFFERENT: ' + '; '.join(problems) if problems else ''}")
        except RuntimeError as exc:
            log(f"[night] {rows:,} rows FAILED: {exc}")
            sizes.append({"rows": rows, "error": str(exc)[:3000]})
        if not keep:
            shutil.rmtree(prepared, ignore_errors=True)
    return {"benchmark": "night", "estimator": estimator, "estimator_params": ESTIMATORS[estimator],
            "cores": os.cpu_count(), "loadavg_start": os.getloadavg(), "sizes": sizes,
            "failed": sum("error" in s or bool(s.get("problems")) for s in sizes), "versions": _versions()}


def _versions() -> dict[str, str]:
    from importlib import metadata

    return {p: metadata.version(p) for p in ("prefect", "mlflow", "scikit-learn", "evidently", "pandas")}


# ---------------------------------------------------------------------------------------------------------------
# Tables and verdicts.
# ---------------------------------------------------------------------------------------------------------------
def verdicts(results: dict[str, Any]) -> list[dict[str, str]]:
    """Targets: flow <= 1.25x script at 100k; the 1M night <= 5 min and <= 1.3x; same branch; no failed request."""
    out = []
    ok = [s for s in results["sizes"] if "error" not in s]
    for s in results["sizes"]:
        if "error" in s or s["problems"]:
            out.append({"status": "FAIL", "target": f"{s['rows']:,} rows: both sides promote the same challenger, "
                        "server swaps without failed requests", "detail": s.get("error", "; ".join(s["problems"]))[:500]})
    for s in ok:
        if s["rows"] == TARGET_RATIO_AT:
            out.append({"status": "PASS" if s["ratio"] <= TARGET_RATIO else "FAIL",
                        "target": f"flow <= {TARGET_RATIO}x script at {TARGET_RATIO_AT:,} rows",
                        "detail": f"{s['ratio']:.2f}x ({s['flow']['measured_seconds']:.1f} s vs "
                                  f"{s['script']['measured_seconds']:.1f} s)"})
        if s["rows"] == BIG:
            wall = s["flow"]["measured_seconds"]
            out.append({"status": "PASS" if wall <= TARGET_BIG_WALL else "FAIL",
                        "target": f"{BIG:,}-row night <= {TARGET_BIG_WALL / 60:.0f} min (flow, end to end)",
                        "detail": f"{wall:.0f} s; peak RSS {s['flow']['peak_tree_rss_mb']:.0f} MB (flow + Prefect "
                                  f"server), model server {s['flow']['server']['peak_rss_mb']:.0f} MB"})
            out.append({"status": "PASS" if s["ratio"] <= TARGET_BIG_RATIO else "FAIL",
                        "target": f"{BIG:,}-row flow <= {TARGET_BIG_RATIO}x script", "detail": f"{s['ratio']:.2f}x"})
    for s in ok:
        out.append({"status": "INFO", "kind": "report", "target": f"{s['rows']:,} rows: orchestration overhead",
                    "detail": f"{s['overhead_seconds']:+.1f} s over {s['flow']['task_runs']} task + "
                              f"{s['flow']['flow_runs']} flow runs = {s['overhead_ms_per_run']:+.0f} ms per run; "
                              f"outside the steps {s.get('gap_ms_per_run', float('nan')):+.0f} ms per run"})
    return out


def print_results(results: dict[str, Any]) -> None:
    """Flow vs script per size, start-up, the swap under load, then where the time goes per step."""
    from rich.console import Console
    from rich.table import Table

    from benchmarks import print_verdicts

    console = Console(width=None if sys.stdout.isatty() else 170)
    table = Table(title=f"One night (monitor, retrain, gate, promote + live swap), estimator {results['estimator']} "
                        f"{json.dumps(results['estimator_params'])}, {results['cores']} cores, each side a fresh "
                        "process", title_justify="left")
    for name in ("rows", "script s", "flow s", "flow/script", "overhead s", "task+flow runs", "ms/run",
                 "between steps s", "ms/run (steps)",
                 "imports s", "Prefect start-up s", "script CPU s", "flow CPU s", "peak RSS MB", "server swap", "failed req",
                 "load avg"):
        table.add_column(name, justify="right")
    for s in results["sizes"]:
        if "error" in s:
            table.add_row(f"{s['rows']:,}", "[red]FAILED[/red]", *[""] * 15)
            continue
        f, p = s["flow"], s["script"]
        table.add_row(
            f"{s['rows']:,}", f"{p['measured_seconds']:.1f}", f"{f['measured_seconds']:.1f}", f"{s['ratio']:.2f}x",
            f"{s['overhead_seconds']:+.1f}", f"{f['task_runs']}+{f['flow_runs']}", f"{s['overhead_ms_per_run']:+.0f}",
            *((f"{s['gap_script_seconds']:.1f} / {s['gap_flow_seconds']:.1f}", f"{s['gap_ms_per_run']:+.0f}")
              if "gap_ms_per_run" in s else ("", "")),
            f"{p['import_seconds']:.0f} / {f['import_seconds']:.0f}",
            f"{f['server_seconds']:.0f} + {f['warmup_seconds']:.1f}", f"{p['measured_cpu_seconds']:.0f}",
            f"{f['measured_cpu_seconds']:.0f}", f"{p['peak_tree_rss_mb']:.0f} / {f['peak_tree_rss_mb']:.0f}",
            f"v{f['server']['version_before']}->v{f['server']['version_after']}",
            f"{p['server']['failed']}/{p['server']['requests']}, {f['server']['failed']}/{f['server']['requests']}",
            f"{p['loadavg_1min']:.1f} / {f['loadavg_1min']:.1f}")
    console.print(table)
    console.print("script s / flow s: the measured night only (imports, Prefect server and warm-up flow not in it); "
                  "overhead = flow - script, per task run + flow run; between steps = wall minus the summed step seconds "
                  "(script / flow), ms/run (steps) = their difference per run (the steps' compute noise left out); "
                  "imports s = imports + the libraries a night loads "
                  "lazily + MLflow's store opened (script / flow); Prefect start-up = ephemeral server + a trivial "
                  "warm-up flow; peak RSS = script / flow process tree (flow + Prefect server); failed req = script, "
                  "flow; load avg = 1-min at the night's start (script / flow)")
    for s in results["sizes"]:
        if "error" in s:
            continue
        steps = Table(title=f"{s['rows']:,} rows: where the night's time goes (seconds; flow = Prefect task run "
                            "durations, script = timers around the same calls)", title_justify="left")
        for name in ("step", "script s", "flow s", "flow - script"):
            steps.add_column(name, justify="left" if name == "step" else "right")
        script_steps, flow_steps = s["script"]["stages"], s["flow"]["stages"]
        for step in sorted(set(script_steps) | set(flow_steps), key=lambda k: -max(script_steps.get(k, 0),
                                                                                   flow_steps.get(k, 0))):
            a, b = script_steps.get(step), flow_steps.get(step)
            steps.add_row(step, "-" if a is None else f"{a:.2f}", "-" if b is None else f"{b:.2f}",
                          "" if a is None or b is None else f"{b - a:+.2f}")
        steps.add_row("(sum of steps)", f"{sum(script_steps.values()):.1f}", f"{sum(flow_steps.values()):.1f}", "")
        console.print(steps)
    print_verdicts(console, verdicts(results))


# ---------------------------------------------------------------------------------------------------------------
# Children.
# ---------------------------------------------------------------------------------------------------------------
def _stage_name(task_run_name: str) -> str:
    """A task run's name without Prefect's random suffix (cv-candidate-<i> is the cross-validate task)."""
    if task_run_name.startswith("cv-candidate-"):
        return "cross-validate"
    return re.sub(r"-[0-9a-z]{3}$", "", task_run_name)


def _prefect_runs(since: float) -> dict[str, Any]:
    """Flow and task runs that started after `since`: counts and summed task seconds per task name."""
    from datetime import datetime, timezone

    from prefect.client.orchestration import get_client

    start = datetime.fromtimestamp(since, tz=timezone.utc)
    with get_client(sync_client=True) as client:
        flow_runs = [r for r in client.read_flow_runs(limit=200) if r.start_time and r.start_time >= start]
        ids = {r.id for r in flow_runs}
        task_runs, offset = [], 0
        while True:
            page = client.read_task_runs(limit=200, offset=offset)
            task_runs += page
            offset += len(page)
            if len(page) < 200:
                break
    ours = [r for r in task_runs if r.flow_run_id in ids]
    with get_client(sync_client=True) as client:
        flow_names = {client.read_flow(f).name for f in {r.flow_id for r in flow_runs}}
    # A subflow shows in its parent as a stand-in task run named after the flow ("monitor-0"): not a task of ours.
    subflow_parents = [r for r in ours if re.sub(r"-\d+$", "", r.name) in flow_names]
    stages: dict[str, float] = {}
    for r in ours:
        if r in subflow_parents or not (r.start_time and r.end_time):
            continue
        name = _stage_name(r.name)
        stages[name] = stages.get(name, 0.0) + (r.end_time - r.start_time).total_seconds()
    flows = {r.name: (r.end_time - r.start_time).total_seconds() if r.end_time and r.start_time else None
             for r in flow_runs}
    return {"task_runs": len(ours) - len(subflow_parents), "flow_runs": len(flow_runs), "stages": stages, "flow_run_seconds": flows,
            "subflow_task_runs": len(subflow_parents), "task_states": sorted({r.state_name or "" for r in ours})}


def _summary(result: Any) -> dict[str, Any]:
    """The flow's NightlyResult as the plain script's dict."""
    return {"action": result.action, "champion_before": result.champion_before, "champion_after": result.champion_after,
            "challenger_version": result.challenger_version, "retrain_reasons": result.retrain_reasons,
            "decision": result.decision.model_dump(mode="json") if result.decision else None,
            "deploy": result.deploy.status if result.deploy else None, "rows": result.rows}


def warm_libraries() -> None:
    """What both sides pay once per process before their first night: the libraries a night imports lazily
    (MLflow, Evidently, scikit-learn's estimators, skops, pyarrow) and MLflow's SQLite store opened."""
    import mlflow.artifacts
    import mlflow.data
    import mlflow.pyfunc
    import mlflow.sklearn  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    import skops.io  # noqa: F401
    from evidently import Report  # noqa: F401
    from evidently.legacy.calculations.stattests.registry import get_stattest  # noqa: F401
    from evidently.presets import DataDriftPreset  # noqa: F401

    from nightshift.settings import get_settings
    from tasks.registry import store as registry_store
    from tasks.registry.versions import alias_state

    alias_state(registry_store.TrackingConfig.from_settings(get_settings()), MODEL)


def child(mode: str, state: Path, rows: int, estimator: str, out: Path) -> None:
    """One night in this fresh process: 'flow' (server + warm-up flow first) or 'script'/'prepare' (plain)."""
    import resource

    marks: dict[str, float] = {"start": time.time()}
    from flows.nightly import nightly  # the script imports the same modules (they import prefect; nothing runs)

    warm_libraries()
    marks["imported"] = marks["server"] = time.time()
    night = 1 if mode == "prepare" else 2
    params = night_params(state, rows, estimator, night)
    if mode == "flow":
        from prefect import flow, task
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:  # starts the ephemeral server (a subprocess), as a flow would
            client.api_healthcheck()
        marks["server"] = time.time()

        @task(name="warm-up-task")
        def warm_task(x: int) -> int:
            return x + 1

        @flow(name="warm-up")
        def warm() -> int:
            return warm_task(1)

        warm()
    marks["measured_start"] = time.time()
    load = os.getloadavg()[0]
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    others = [p for p in process_tree(os.getpid()) if p != os.getpid()]
    others_before, machine_before = cpu_seconds(others), machine_seconds()[0]
    stages = Stages()
    if mode == "flow":
        result = _summary(nightly(params))
    else:
        result = plain_night(params, stages)
    marks["measured_end"] = time.time()
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    main_cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    others_cpu = cpu_seconds(others) - others_before
    machine_cpu = machine_seconds()[0] - machine_before
    prefect = _prefect_runs(marks["measured_start"]) if mode == "flow" else {"stages": stages.seconds}
    measured = marks["measured_end"] - marks["measured_start"]
    out.write_text(json.dumps({
        "result": result, "marks": marks, "loadavg_1min": load,
        "import_seconds": marks["imported"] - marks["start"],  # imports + warm_libraries(), both sides
        "server_seconds": marks["server"] - marks["imported"],
        "warmup_seconds": marks["measured_start"] - marks["server"], "measured_seconds": measured,
        "seconds": measured, "champion_after": result.get("champion_after"), "action": result.get("action"),
        "measured_cpu_seconds": main_cpu + others_cpu, "main_cpu_seconds": main_cpu,
        "server_cpu_seconds": others_cpu, "machine_cpu_seconds": machine_cpu, **prefect,
    }, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.night --child MODE STATE ROWS ESTIMATOR OUT` (what the benchmark runs)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.night")
    parser.add_argument("--child", nargs=5, metavar=("MODE", "STATE", "ROWS", "ESTIMATOR", "OUT"), required=True)
    args = parser.parse_args(argv)
    mode, state, rows, estimator, out = args.child
    child(mode, Path(state), int(rows), estimator, Path(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
