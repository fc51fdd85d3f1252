"""Serving benchmark: our model server vs `mlflow models serve` on the same registered model, in the same run."""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from benchmarks import print_verdicts, save_results

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # every server binds loopback and every request goes there
SERVERS = ("nightshift", "mlflow")
MODELS: dict[str, dict[str, Any]] = {  # key -> registered name, train-flow flags, what the table title says
    "iris": {"name": "bench-iris", "train_args": ["--dataset", "iris", "--grid", "{}"],
             "title": "iris (the seed's model): RandomForest 100 trees, 4 numeric features"},
    "demo": {"name": "bench-demo",
             "train_args": ["--dataset", "demo", "--rows", "20000", "--grid", '{"n_estimators": [100]}'],
             "title": "demo churn: RandomForest 100 trees, 20 numeric + 5 categorical features"},
}
TARGET_MODEL = "iris"
TARGET_RATIO = 1.5  # ours / mlflow requests/s on one connection
TARGET_P99_MS = 15.0  # our single-row p99 on one connection
WARMUP = 50
SINGLE_REQUESTS = 1000
CONCURRENCY = 4
CONCURRENT_REQUESTS = 2000
CONCURRENT_SECONDS = 10.0
SINGLE_SECONDS_CAP = 120.0  # the sequential phase stops here even if N requests did not finish
PAYLOAD_ROWS = 200  # distinct rows cycled through by the load (iris has fewer: its 45-row reference sample)
SANITY_ROWS = 100  # rows also scored one by one on both servers and compared
MAX_ERRORS = 20  # a phase stops after this many failed requests
REQUEST_TIMEOUT = 10.0
READY_TIMEOUT = 180.0
STOP_TIMEOUT = 10.0
TRAIN_TIMEOUT = 900.0
CHILD_TIMEOUT = 600.0


def _log_default(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def child_env(state: Path) -> dict[str, str]:
    """Environment for every child: repo importable, all state (MLflow, Prefect) inside `state`, venv bin on PATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NIGHTSHIFT_", "MLFLOW_", "PREFECT_"))}  # never the user's registry or Prefect server
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # mlflow execs uvicorn
    env.update({
        "NIGHTSHIFT_STATE_DIR": str(state), "NIGHTSHIFT_SERVER_TOKEN": "bench-token",
        "NIGHTSHIFT_SERVER_HOST": HOST, "MLFLOW_TRACKING_URI": f"sqlite:///{state / 'mlflow.db'}",
        "PREFECT_HOME": str(state / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
        # A fresh PREFECT_HOME migrates its database on first start: Prefect's 20 s default is too tight on 2 cores.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    })
    return env


def _run_child(args: list[str], state: Path, timeout: float, what: str) -> str:
    """Run `python <args>` in a fresh subprocess and return its stdout; raise with the stderr tail on failure."""
    try:
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=child_env(state), capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what} did not finish in {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-30:])
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def prepare_models(state: Path, keys: list[str], log: Callable[[str], None]) -> dict[str, Any]:
    """Train, register and promote each model in `state` (skipped if done there before); rows and metadata."""
    manifest_path = state / "models.json"
    manifest: dict[str, Any] = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for key in keys:
        if key in manifest:
            log(f"[serving] {key}: reusing {MODELS[key]['name']} v{manifest[key]['version']} in {state}")
            continue
        spec = MODELS[key]
        log(f"[serving] {key}: training {spec['name']} (train flow subprocess) ...")
        start = time.perf_counter()
        out = _run_child(["-m", "flows.train", "--model-name", spec["name"], *spec["train_args"]], state,
                         TRAIN_TIMEOUT, f"training {spec['name']}")
        trained = json.loads(out[out.index("{"):])
        manifest[key] = {"name": spec["name"], "version": trained["model_version"], "run_id": trained["run_id"],
                         "test_metrics": trained["test_metrics"], "train_seconds": time.perf_counter() - start}
        log(f"[serving] {key}: {spec['name']} v{trained['model_version']} in {manifest[key]['train_seconds']:.0f} s")
    todo = [k for k in keys if "features" not in manifest[k]]
    if todo:
        log(f"[serving] promoting {', '.join(MODELS[k]['name'] for k in todo)} to champion, picking request rows ...")
        out = _run_child(["-m", "benchmarks.serving", "--child", "setup",
                          *[f"{MODELS[k]['name']}={manifest[k]['version']}" for k in todo]], state, CHILD_TIMEOUT,
                         "promotion child")
        setup = json.loads(out.strip().splitlines()[-1])
        for key in todo:
            manifest[key].update(setup[MODELS[key]["name"]])
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return manifest


def setup_child(specs: list[str]) -> dict[str, Any]:
    """Promote each NAME=VERSION to champion; its features and request rows (from its reference sample)."""
    from nightshift.settings import get_settings
    from tasks.registry.runs import REFERENCE_ARTIFACT, load_frame_artifact
    from tasks.registry.store import TrackingConfig
    from tasks.registry.versions import load_version, move_champion

    cfg = TrackingConfig.from_settings(get_settings())
    out: dict[str, Any] = {}
    for spec in specs:
        name, version = spec.split("=", 1)
        move_champion(cfg, name, version)
        loaded = load_version(cfg, name, version)
        contract = loaded.contract
        reference = load_frame_artifact(cfg, loaded.ref.run_id, REFERENCE_ARTIFACT)
        frame = reference[contract.features].head(PAYLOAD_ROWS)
        rows = [[_json_value(v) for v in row] for row in frame.itertuples(index=False, name=None)]
        out[name] = {"features": list(contract.features), "rows": rows,
                     "rows_with_missing": int(frame.isna().any(axis=1).sum())}
    return out


def _json_value(v: Any) -> Any:
    """A plain JSON value: numpy scalars unwrapped, NaN as null."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def server_command(server: str, model_name: str, state: Path, port: int) -> tuple[list[str], str]:
    """The command that starts one server on `port`, and the path that answers 200 once it is ready."""
    if server == "nightshift":
        return [sys.executable, "-m", "serving.server", "--host", HOST, "--port", str(port)], "/ready"
    if server == "mlflow":
        mlflow = str(Path(sys.executable).parent / "mlflow")
        return [mlflow, "models", "serve", "-m", f"models:/{model_name}@champion", "--env-manager", "local",
                "--host", HOST, "--port", str(port)], "/ping"
    raise ValueError(f"unknown server {server!r}; use one of {', '.join(SERVERS)}")


def process_tree(pid: int) -> list[int]:
    """`pid` and all its live descendants (mlflow's CLI runs uvicorn as a child)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as handle:
                    todo.extend(int(c) for c in handle.read().split())
        except OSError:
            continue
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (those still alive)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / tick


def machine_seconds() -> tuple[float, float]:
    """Machine-wide busy CPU seconds so far (all cores; everything but idle and iowait) and of those, steal."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values[:8]) - values[3] - values[4]) / tick, values[7] / tick


def start_server(server: str, model_name: str, state: Path, log_path: Path,
                 env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int, float]:
    """Start one server on a free loopback port and wait until it is ready; returns the process, port, start-up s.

    `env`: extra environment for the server (e.g. NIGHTSHIFT_CAPTURE_*)."""
    port = free_port()
    command, ready_path = server_command(server, model_name, state, port)
    env = child_env(state) | {"NIGHTSHIFT_MODEL_NAME": model_name} | (env or {})
    start = time.perf_counter()
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{server} server exited with {proc.returncode}:\n{log_path.read_text()[-2000:]}")
        conn = http.client.HTTPConnection(HOST, port, timeout=2)
        try:
            conn.request("GET", ready_path)
            if conn.getresponse().status == 200:
                return proc, port, time.perf_counter() - start
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.25)
    stop_server(proc)
    raise RuntimeError(f"{server} server not ready in {READY_TIMEOUT:.0f} s:\n{log_path.read_text()[-2000:]}")


def _alive(pid: int, proc: subprocess.Popen) -> bool:
    """Is `pid` still running (a zombie waiting for its parent counts as gone)?"""
    if pid == proc.pid:
        return proc.poll() is None
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_server(proc: subprocess.Popen) -> None:
    """Stop a server and its children by PID, children first: SIGTERM, then SIGKILL after STOP_TIMEOUT each."""
    for pid in reversed(process_tree(proc.pid)):  # so mlflow's CLI reaps its uvicorn child before it goes
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not _alive(pid, proc):
                break
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + STOP_TIMEOUT
            while time.monotonic() < deadline and _alive(pid, proc):
                time.sleep(0.05)
    if proc.poll() is None:
        proc.wait(timeout=STOP_TIMEOUT)


# ---- the load generator (runs in its own subprocess, stdlib only) ----

def _body(features: list[str], rows: list[list[Any]]) -> bytes:
    return json.dumps({"dataframe_split": {"columns": features, "data": rows}}).encode()


class _Client:
    """One keep-alive HTTP/1.1 connection (http.client: cheaper per request than httpx) that reconnects on errors."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT)
        self.headers = {"Content-Type": "application/json"}

    def post(self, body: bytes) -> tuple[int, bytes]:
        try:
            self.conn.request("POST", "/invocations", body, self.headers)
            response = self.conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            self.conn = http.client.HTTPConnection(HOST, self.port, timeout=REQUEST_TIMEOUT)
            return 0, repr(exc).encode()

    def close(self) -> None:
        self.conn.close()


def _percentile(sorted_ms: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_ms:
        return float("nan")
    return sorted_ms[max(0, math.ceil(q / 100 * len(sorted_ms)) - 1)]


def _stats(latencies_ms: list[float], seconds: float, errors: int, first_error: str | None,
           cpu: dict[str, float]) -> dict[str, Any]:
    ok = sorted(latencies_ms)
    n = len(ok)
    return {
        "requests": n, "errors": errors, "first_error": first_error, "seconds": seconds,
        "rps": n / seconds if seconds > 0 else 0.0,
        "p50_ms": _percentile(ok, 50), "p90_ms": _percentile(ok, 90), "p99_ms": _percentile(ok, 99),
        "max_ms": ok[-1] if ok else float("nan"), "mean_ms": sum(ok) / n if n else float("nan"),
        "server_cpu_ms_per_request": cpu["server"] * 1000 / n if n else float("nan"),
        "client_cpu_ms_per_request": cpu["client"] * 1000 / n if n else float("nan"),
        "busy_cores": cpu["busy"] / seconds if seconds > 0 else float("nan"),
        "server_cores": cpu["server"] / seconds if seconds > 0 else float("nan"),
        "client_cores": cpu["client"] / seconds if seconds > 0 else float("nan"),
        "steal_cores": cpu["steal"] / seconds if seconds > 0 else float("nan"),
    }


class _CpuMeter:
    """CPU seconds used by the server's processes, this client process and the whole machine over one phase."""

    def __init__(self, server_pids: list[int]) -> None:
        self.server_pids = server_pids
        self.start = self._now()

    def _now(self) -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this client process
        busy, steal = machine_seconds()
        return {"server": cpu_seconds(self.server_pids), "client": usage.ru_utime + usage.ru_stime, "busy": busy,
                "steal": steal}

    def stop(self) -> dict[str, float]:
        end = self._now()
        return {k: end[k] - self.start[k] for k in end}


def _single_phase(port: int, bodies: list[bytes], n: int, server_pids: list[int]) -> dict[str, Any]:
    """N sequential one-row requests on one keep-alive connection (bounded by SINGLE_SECONDS_CAP)."""
    client = _Client(port)
    latencies: list[float] = []
    errors, first_error = 0, None
    meter = _CpuMeter(server_pids)
    start = time.perf_counter()
    deadline = start + SINGLE_SECONDS_CAP
    for i in range(n):
        t0 = time.perf_counter()
        status, payload = client.post(bodies[i % len(bodies)])
        t1 = time.perf_counter()
        if status == 200:
            latencies.append((t1 - t0) * 1000)
        else:
            errors += 1
            first_error = first_error or f"{status}: {payload[:300].decode(errors='replace')}"
        if errors >= MAX_ERRORS or t1 > deadline:
            break
    seconds = time.perf_counter() - start
    cpu = meter.stop()
    client.close()
    return _stats(latencies, seconds, errors, first_error, cpu)


def _concurrent_phase(port: int, bodies: list[bytes], connections: int, total: int, limit_seconds: float,
                      server_pids: list[int], keep_latencies: bool = False) -> dict[str, Any]:
    """`connections` keep-alive connections (a thread each) sharing `total` requests, stopped after `limit_seconds`
    (`keep_latencies`: each request's milliseconds under `latencies_ms` too)."""
    lock = threading.Lock()
    issued = [0]
    errors: list[str] = []
    per_thread: list[list[float]] = [[] for _ in range(connections)]
    clients = [_Client(port) for _ in range(connections)]
    start_gate = threading.Barrier(connections + 1)
    deadline = [0.0]

    def worker(index: int) -> None:
        client, out = clients[index], per_thread[index]
        start_gate.wait()
        while True:
            with lock:
                if issued[0] >= total or len(errors) >= MAX_ERRORS or time.perf_counter() >= deadline[0]:
                    return
                i = issued[0]
                issued[0] += 1
            t0 = time.perf_counter()
            status, payload = client.post(bodies[i % len(bodies)])
            t1 = time.perf_counter()
            if status == 200:
                out.append((t1 - t0) * 1000)
            else:
                with lock:
                    errors.append(f"{status}: {payload[:300].decode(errors='replace')}")

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(connections)]
    for thread in threads:
        thread.start()
    meter = _CpuMeter(server_pids)
    start = time.perf_counter()
    deadline[0] = start + limit_seconds
    start_gate.wait()
    for thread in threads:
        thread.join(timeout=limit_seconds + 2 * REQUEST_TIMEOUT)
    seconds = time.perf_counter() - start
    cpu = meter.stop()
    for client in clients:
        client.close()
    latencies = [ms for out in per_thread for ms in out]
    result = _stats(latencies, seconds, len(errors), errors[0] if errors else None, cpu)
    result["connections"] = connections
    if keep_latencies:
        result["latencies_ms"] = latencies
    return result


def _sanity(port: int, features: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    """Predictions for the first SANITY_ROWS rows one by one and for all rows in one batch request."""
    client = _Client(port)
    single: list[Any] = []
    for row in rows[:SANITY_ROWS]:
        status, payload = client.post(_body(features, [row]))
        single.append(json.loads(payload)["predictions"][0] if status == 200 else f"HTTP {status}")
    status, payload = client.post(_body(features, rows))
    batch = json.loads(payload)["predictions"] if status == 200 else f"HTTP {status}: {payload[:300]!r}"
    client.close()
    return {"single": single, "batch": batch}


def load_child(port: int, payload_path: Path, server_pids: list[int], warmup: int, requests: int, connections: int,
               concurrent_requests: int, concurrent_seconds: float) -> dict[str, Any]:
    """Sanity predictions, warm-up, then the single-connection and the concurrent phase against one server."""
    payload = json.loads(payload_path.read_text())
    features, rows = payload["features"], payload["rows"]
    bodies = [_body(features, [row]) for row in rows]
    sanity = _sanity(port, features, rows)
    warm = _Client(port)
    for i in range(warmup):
        warm.post(bodies[i % len(bodies)])
    warm.close()
    single = _single_phase(port, bodies, requests, server_pids)
    concurrent = _concurrent_phase(port, bodies, connections, concurrent_requests, concurrent_seconds, server_pids)
    return {"sanity": sanity, "single": single, "concurrent": concurrent, "body_bytes": len(bodies[0])}


# ---- orchestration ----

def measure_server(server: str, key: str, model: dict[str, Any], state: Path, options: dict[str, Any],
                   log: Callable[[str], None]) -> dict[str, Any]:
    """Start one server, run the load child against it, stop it; the load child's result plus start-up time."""
    payload_path = state / f"rows-{key}.json"
    payload_path.write_text(json.dumps({"features": model["features"], "rows": model["rows"]}))
    log_path = state / f"{server}-{key}.log"
    log(f"[serving] {key:<5} {server:<10} starting ...")
    proc, port, ready_seconds = start_server(server, model["name"], state, log_path)
    try:
        pids = process_tree(proc.pid)
        log(f"[serving] {key:<5} {server:<10} ready in {ready_seconds:.1f} s on {HOST}:{port} (pids {pids}); load ...")
        result = run_load(port, pids, payload_path, state, options, f"load child against {server}")
    finally:
        stop_server(proc)
    result.update(server=server, ready_seconds=ready_seconds)
    s, c = result["single"], result["concurrent"]
    log(f"[serving] {key:<5} {server:<10} 1 conn: p50 {s['p50_ms']:.2f} ms  p99 {s['p99_ms']:.2f} ms  "
        f"{s['rps']:.0f} req/s  |  {c['connections']} conn: {c['rps']:.0f} req/s  p99 {c['p99_ms']:.1f} ms  "
        f"|  errors {s['errors'] + c['errors']}")
    return result


def run_load(port: int, pids: list[int], payload_path: Path, state: Path, options: dict[str, Any],
             what: str) -> dict[str, Any]:
    """The load child (sanity, warm-up, one connection, then `connections`) against a server on `port`; its result."""
    out = _run_child(["-m", "benchmarks.serving", "--child", "load", "--port", str(port),
                      "--payload", str(payload_path), "--server-pids", ",".join(map(str, pids)),
                      "--warmup", str(options["warmup"]), "--requests", str(options["requests"]),
                      "--connections", str(options["connections"]),
                      "--concurrent-requests", str(options["concurrent_requests"]),
                      "--concurrent-seconds", str(options["concurrent_seconds"])],
                     state, CHILD_TIMEOUT, what)
    return json.loads(out.strip().splitlines()[-1])


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-metric medians over the repeated runs of one server (a single run is itself)."""
    out: dict[str, Any] = {"ready_seconds": _median([r["ready_seconds"] for r in runs])}
    for phase in ("single", "concurrent"):
        keys = [k for k, v in runs[0][phase].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        out[phase] = {k: _median([r[phase][k] for r in runs]) for k in keys}
        out[phase]["errors"] = sum(r[phase]["errors"] for r in runs)
        out[phase]["first_error"] = next((r[phase]["first_error"] for r in runs if r[phase]["first_error"]), None)
    return out


def compare_predictions(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Do both servers give the same labels for the same rows (one by one and in a batch)?"""
    ours, theirs = runs["nightshift"][0]["sanity"], runs["mlflow"][0]["sanity"]
    single_diff = [i for i, (a, b) in enumerate(zip(ours["single"], theirs["single"])) if a != b]
    batch_ok = isinstance(ours["batch"], list) and ours["batch"] == theirs["batch"]
    return {"single_rows": len(ours["single"]), "single_mismatches": single_diff[:20],
            "single_equal": not single_diff and len(ours["single"]) == len(theirs["single"]),
            "batch_rows": len(ours["batch"]) if isinstance(ours["batch"], list) else 0, "batch_equal": batch_ok,
            "example": {"nightshift": ours["single"][:3], "mlflow": theirs["single"][:3]}}


def run_benchmark(keys: list[str], *, state_dir: Path | None = None, repeat: int = 1, warmup: int = WARMUP,
                  requests: int = SINGLE_REQUESTS, connections: int = CONCURRENCY,
                  concurrent_requests: int = CONCURRENT_REQUESTS, concurrent_seconds: float = CONCURRENT_SECONDS,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train/promote the models, then measure both servers on each (alternating order when repeated)."""
    log = log or _log_default
    options = {"warmup": warmup, "requests": requests, "connections": connections,
               "concurrent_requests": concurrent_requests, "concurrent_seconds": concurrent_seconds}
    results: dict[str, Any] = {
        "benchmark": "serving",
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "loadavg_at_start": list(os.getloadavg())},
        "versions": _versions(),
        "targets": {"model": TARGET_MODEL, "ratio": TARGET_RATIO, "p99_ms": TARGET_P99_MS},
        "options": options | {"repeat": max(repeat, 1), "payload_rows": PAYLOAD_ROWS, "sanity_rows": SANITY_ROWS},
        "models": {},
    }
    temp = None if state_dir else tempfile.mkdtemp(prefix="nightshift-bench-serving-")
    state = Path(state_dir or temp).resolve()  # type: ignore[arg-type]
    state.mkdir(parents=True, exist_ok=True)
    try:
        manifest = prepare_models(state, keys, log)
        for key in keys:
            model = manifest[key]
            runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SERVERS}
            for r in range(max(repeat, 1)):
                for server in (SERVERS if r % 2 == 0 else tuple(reversed(SERVERS))):
                    runs[server].append(measure_server(server, key, model, state, options, log))
            summary = {s: summarize(rs) for s, rs in runs.items()}
            ours, theirs = summary["nightshift"], summary["mlflow"]
            results["models"][key] = {
                "name": model["name"], "version": model["version"], "title": MODELS[key]["title"],
                "features": len(model["features"]), "rows_in_payload": len(model["rows"]),
                "rows_with_missing": model.get("rows_with_missing", 0), "test_metrics": model.get("test_metrics"),
                "body_bytes": runs["nightshift"][0]["body_bytes"],
                "summary": summary, "runs": {s: [{k: v for k, v in run.items() if k != "sanity"} for run in rs]
                                             for s, rs in runs.items()},
                "predictions": compare_predictions(runs),
                "ratio_single_rps": ours["single"]["rps"] / theirs["single"]["rps"],
                "ratio_concurrent_rps": ours["concurrent"]["rps"] / theirs["concurrent"]["rps"],
            }
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    results["state_dir"] = None if temp else str(state)
    results["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results["verdicts"] = verdicts(results)
    return results


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for pkg in ("mlflow", "scikit-learn", "fastapi", "uvicorn", "pandas"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "?"
    return out


def verdicts(results: dict[str, Any]) -> list[dict[str, str]]:
    """PASS/FAIL for the targets on the seed (iris) model; the same checks reported for the other models."""
    out: list[dict[str, str]] = []
    for key, m in results["models"].items():
        tag = "target" if key == TARGET_MODEL else "report"
        ours, theirs = m["summary"]["nightshift"]["single"], m["summary"]["mlflow"]["single"]
        ratio = m["ratio_single_rps"]
        out.append({"model": key, "kind": tag, "target": "requests/s vs mlflow",
                    "status": "PASS" if ratio >= TARGET_RATIO else "FAIL",
                    "detail": f"{key}: ours {ours['rps']:.0f} req/s vs mlflow {theirs['rps']:.0f} req/s on 1 "
                              f"connection = {ratio:.2f}x, target >= {TARGET_RATIO}x"})
        out.append({"model": key, "kind": tag, "target": "single-row p99",
                    "status": "PASS" if ours["p99_ms"] <= TARGET_P99_MS else "FAIL",
                    "detail": f"{key}: ours p99 {ours['p99_ms']:.2f} ms (p50 {ours['p50_ms']:.2f} ms) over "
                              f"{ours['requests']:.0f} sequential one-row requests, target <= {TARGET_P99_MS:g} ms"})
        p = m["predictions"]
        errors = sum(m["summary"][s][ph]["errors"] for s in SERVERS for ph in ("single", "concurrent"))
        same = p["single_equal"] and p["batch_equal"] and errors == 0
        out.append({"model": key, "kind": tag, "target": "same predictions",
                    "status": "PASS" if same else "FAIL",
                    "detail": f"{key}: labels equal on {p['single_rows']} one-row requests "
                              f"({'yes' if p['single_equal'] else 'NO, rows ' + str(p['single_mismatches'])}) and a "
                              f"{p['batch_rows']}-row batch ({'yes' if p['batch_equal'] else 'NO'}); "
                              f"failed requests during load: {errors}"})
    if TARGET_MODEL not in results["models"]:
        out.insert(0, {"model": TARGET_MODEL, "kind": "target", "target": "serving targets", "status": "NOT MEASURED",
                       "detail": f"the {TARGET_MODEL} model was not run"})
    return out


def print_results(results: dict[str, Any]) -> None:
    """One table per model (both servers, ratio row), CPU notes, then the verdicts."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 200)
    opts = results["options"]
    for m in results["models"].values():
        table = Table(title=f"Serving benchmark: {m['title']} ({m['name']} v{m['version']}), POST /invocations, "
                            f"one row per request", title_justify="left")
        for name in ("server", "ready s", "p50 ms", "p99 ms", "req/s 1 conn", f"p50 ms {opts['connections']} conn",
                     f"p99 ms {opts['connections']} conn", f"req/s {opts['connections']} conn",
                     "server CPU ms/req", "client CPU ms/req", "errors"):
            table.add_column(name, justify="left" if name == "server" else "right")
        for server in SERVERS:
            s = m["summary"][server]
            one, many = s["single"], s["concurrent"]
            p99 = f"{one['p99_ms']:.2f}"
            if server == "nightshift" and one["p99_ms"] > TARGET_P99_MS:
                p99 = f"[red]{p99}[/red]"
            table.add_row("nightshift (ours)" if server == "nightshift" else "mlflow models serve",
                          f"{s['ready_seconds']:.1f}", f"{one['p50_ms']:.2f}", p99, f"{one['rps']:.0f}",
                          f"{many['p50_ms']:.2f}", f"{many['p99_ms']:.2f}", f"{many['rps']:.0f}",
                          f"{one['server_cpu_ms_per_request']:.2f}", f"{one['client_cpu_ms_per_request']:.2f}",
                          str(one["errors"] + many["errors"]))
        ours, theirs = m["summary"]["nightshift"]["single"], m["summary"]["mlflow"]["single"]
        ratio = f"{m['ratio_single_rps']:.2f}x"
        if m["ratio_single_rps"] < TARGET_RATIO:
            ratio = f"[red]{ratio}[/red]"
        cpu = ours["server_cpu_ms_per_request"] / theirs["server_cpu_ms_per_request"]
        table.add_row("ratio ours/mlflow", "", f"{ours['p50_ms'] / theirs['p50_ms']:.2f}x",
                      f"{ours['p99_ms'] / theirs['p99_ms']:.2f}x", ratio, "", "", f"{m['ratio_concurrent_rps']:.2f}x",
                      f"{cpu:.2f}x", "", "", end_section=True)
        console.print(table)
        p = m["predictions"]
        console.print(f"  {m['features']} features, {m['rows_in_payload']} distinct rows cycled "
                      f"({m['rows_with_missing']} with a missing value, sent as null), ~{m['body_bytes']} B bodies; "
                      f"same labels from both servers: {p['single_rows']} one-row requests "
                      f"{'yes' if p['single_equal'] else '[red]NO[/red]'}, {p['batch_rows']}-row batch "
                      f"{'yes' if p['batch_equal'] else '[red]NO[/red]'} (e.g. {p['example']['nightshift']})")
        for server in SERVERS:
            one, many = m["summary"][server]["single"], m["summary"][server]["concurrent"]
            console.print(f"  {server:<10} CPU cores busy, 1 conn: server {one['server_cores']:.2f} + client "
                          f"{one['client_cores']:.2f} of machine {one['busy_cores']:.2f}; {opts['connections']} conn: "
                          f"server {many['server_cores']:.2f} + client {many['client_cores']:.2f} of machine "
                          f"{many['busy_cores']:.2f} ({many['requests']:.0f} requests in {many['seconds']:.1f} s); "
                          f"steal {max(one.get('steal_cores', 0), many.get('steal_cores', 0)):.2f}")
            for phase in ("single", "concurrent"):
                if m["summary"][server][phase]["first_error"]:
                    console.print(f"    [red]first error ({phase})[/red]: {m['summary'][server][phase]['first_error']}")
        console.print()
    machine = results["machine"]
    console.print(f"Load generator: Python http.client keep-alive connections ({opts['requests']} sequential requests "
                  f"after {opts['warmup']} warm-up; then {opts['connections']} threads/connections sharing at most "
                  f"{opts['concurrent_requests']} requests or {opts['concurrent_seconds']:g} s). It shares the "
                  f"{machine['cpus']} cores with the server under test, so the {opts['connections']}-connection "
                  f"numbers are a floor; 'machine' above minus server and client is other load on the box "
                  f"(load average at start {machine['loadavg_at_start'][0]:.2f}). Both servers run one uvicorn "
                  f"worker; mlflow logs every request (its default access log), ours does not. "
                  f"Medians over {opts['repeat']} run(s); each server started fresh per run.")
    console.print()
    print_verdicts(console, results["verdicts"])


def write_results(results: dict[str, Any]) -> Path:
    """Save the full results as JSON under benchmarks/results/."""
    return save_results("serving", results)


def child_main(argv: list[str] | None = None) -> int:
    """Entry point of the setup and load subprocesses: prints the result as one JSON line on stdout."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", choices=("setup", "load"), required=True)
    parser.add_argument("models", nargs="*", metavar="NAME=VERSION", help="setup: models to promote")
    parser.add_argument("--port", type=int)
    parser.add_argument("--payload", type=Path)
    parser.add_argument("--server-pids", default="")
    parser.add_argument("--warmup", type=int, default=WARMUP)
    parser.add_argument("--requests", type=int, default=SINGLE_REQUESTS)
    parser.add_argument("--connections", type=int, default=CONCURRENCY)
    parser.add_argument("--concurrent-requests", type=int, default=CONCURRENT_REQUESTS)
    parser.add_argument("--concurrent-seconds", type=float, default=CONCURRENT_SECONDS)
    args = parser.parse_args(argv)
    if args.child == "setup":
        result = setup_child(args.models)
    else:
        if args.port is None or args.payload is None:
            parser.error("--child load needs --port and --payload")
        pids = [int(p) for p in args.server_pids.split(",") if p]
        result = load_child(args.port, args.payload, pids, args.warmup, args.requests, args.connections,
                            args.concurrent_requests, args.concurrent_seconds)
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(child_main())
