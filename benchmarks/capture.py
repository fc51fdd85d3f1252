"""Capture benchmark: the model server with traffic capture at 100% vs capture off, same model, same run.

Each run starts two fresh servers (subprocesses) on the same model, one capturing every request and one not, and a
load child that takes turns between them: sequential one-row requests on one keep-alive connection per server in
blocks of BLOCK (p50/p99, requests/s), then `connections` at once in SLICES turns each (requests/s). Taking turns
puts the machine's other load on both sides alike, which two measurements one after the other cannot on a shared
2-core box. After the load, the capturing server's /metrics is scraped (rows offered, dropped), it is stopped with
SIGTERM and the rows in its Parquet parts are counted: a run that dropped rows, or whose files hold fewer rows than
it answered, is reported.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from benchmarks import print_verdicts, save_results
from benchmarks import serving as sv

MODES = ("off", "on")
TARGET_MODEL = "demo"  # 25 features, 5 of them categories: more to capture per row than iris' 4 numbers
TARGET_RPS_RATIO = 0.90  # capture on / off requests/s, one connection and `connections` at once
TARGET_P99_RATIO = 1.2  # capture on / off single-row p99
BLOCK = 50  # sequential requests per turn
SLICES = 10  # turns per server in the concurrent phase


def mode_env(mode: str, folder: Path) -> dict[str, str]:
    """The server's capture settings for one mode: off, or every request captured into `folder`."""
    if mode == "off":
        return {"NIGHTSHIFT_CAPTURE_ENABLED": "false"}
    return {"NIGHTSHIFT_CAPTURE_ENABLED": "true", "NIGHTSHIFT_CAPTURE_SAMPLE_RATE": "1",
            "NIGHTSHIFT_CAPTURE_DIR": str(folder)}


def scrape_capture(port: int, model: str) -> dict[str, float]:
    """The capture counters of `model` from the server's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    conn = http.client.HTTPConnection(sv.HOST, port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("nightshift_capture_") and sample.labels.get("model") == model:
                out[sample.name.removeprefix("nightshift_capture_").removesuffix("_total")] = sample.value
    return out


def captured_rows(folder: Path, model: str) -> tuple[int, int]:
    """Rows in the closed Parquet parts of `model` under `folder`, and the number of parts."""
    import pyarrow.parquet as pq

    from tasks.data.served import served_days, served_parts

    parts = [p for day in served_days(folder, model) for p in served_parts(folder, model, day)]
    return sum(pq.ParquetFile(p).metadata.num_rows for p in parts), len(parts)


# ---- the load child: takes turns between the two servers ----

def _order(turn: int) -> tuple[str, ...]:
    return MODES if turn % 2 == 0 else tuple(reversed(MODES))


def _single_turns(ports: dict[str, int], pids: dict[str, list[int]], bodies: list[bytes],
                  requests: int) -> dict[str, dict[str, Any]]:
    """`requests` sequential one-row requests per server, BLOCK at a time, the servers taking turns."""
    clients = {m: sv._Client(port) for m, port in ports.items()}
    acc = {m: {"latencies": [], "seconds": 0.0, "errors": 0, "first_error": None,
               "cpu": dict.fromkeys(("server", "client", "busy", "steal"), 0.0)} for m in ports}
    for turn in range(math.ceil(requests / BLOCK)):
        for m in _order(turn):
            a, meter, start = acc[m], sv._CpuMeter(pids[m]), time.perf_counter()
            for i in range(turn * BLOCK, min((turn + 1) * BLOCK, requests)):
                t0 = time.perf_counter()
                status, payload = clients[m].post(bodies[i % len(bodies)])
                t1 = time.perf_counter()
                if status == 200:
                    a["latencies"].append((t1 - t0) * 1000)
                else:
                    a["errors"] += 1
                    a["first_error"] = a["first_error"] or f"{status}: {payload[:300].decode(errors='replace')}"
            a["seconds"] += time.perf_counter() - start
            for key, value in meter.stop().items():
                a["cpu"][key] += value
    for client in clients.values():
        client.close()
    return {m: sv._stats(a["latencies"], a["seconds"], a["errors"], a["first_error"], a["cpu"]) for m, a in acc.items()}


def _concurrent_turns(ports: dict[str, int], pids: dict[str, list[int]], bodies: list[bytes], connections: int,
                      total: int, seconds: float) -> dict[str, dict[str, Any]]:
    """The serving benchmark's concurrent phase in SLICES turns per server (total requests and seconds split)."""
    acc: dict[str, dict[str, Any]] = {m: {"latencies": [], "seconds": 0.0, "errors": 0, "first_error": None,
                                          "cpu": dict.fromkeys(("server", "client", "busy", "steal"), 0.0)}
                                      for m in ports}
    for turn in range(SLICES):
        for m in _order(turn):
            r = sv._concurrent_phase(ports[m], bodies, connections, max(total // SLICES, 1), seconds / SLICES, pids[m],
                                     keep_latencies=True)
            a = acc[m]
            a["latencies"] += r["latencies_ms"]
            a["seconds"] += r["seconds"]
            a["errors"] += r["errors"]
            a["first_error"] = a["first_error"] or r["first_error"]
            for key in a["cpu"]:
                a["cpu"][key] += r[f"{key}_cores"] * r["seconds"]
    return {m: sv._stats(a["latencies"], a["seconds"], a["errors"], a["first_error"], a["cpu"]) | {
        "connections": connections} for m, a in acc.items()}


def load_child(ports: dict[str, int], pids: dict[str, list[int]], payload_path: Path, warmup: int, requests: int,
               connections: int, concurrent_requests: int, concurrent_seconds: float) -> dict[str, Any]:
    """Sanity predictions and warm-up on both servers, then both phases, the servers taking turns."""
    payload = json.loads(payload_path.read_text())
    features, rows = payload["features"], payload["rows"]
    bodies = [sv._body(features, [row]) for row in rows]
    sanity = {m: sv._sanity(port, features, rows) for m, port in ports.items()}
    for port in ports.values():
        warm = sv._Client(port)
        for i in range(warmup):
            warm.post(bodies[i % len(bodies)])
        warm.close()
    single = _single_turns(ports, pids, bodies, requests)
    concurrent = _concurrent_turns(ports, pids, bodies, connections, concurrent_requests, concurrent_seconds)
    return {m: {"sanity": sanity[m], "single": single[m], "concurrent": concurrent[m]} for m in ports}


# ---- orchestration ----

def measure(key: str, model: dict[str, Any], state: Path, options: dict[str, Any], run: int,
            log: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Both servers started fresh, the load child taking turns between them; with capture on, counters and files."""
    payload_path = state / f"rows-{key}.json"
    payload_path.write_text(json.dumps({"features": model["features"], "rows": model["rows"]}))
    folder = state / "served" / f"{key}-{run}"
    shutil.rmtree(folder, ignore_errors=True)
    log(f"[capture] {key:<5} run {run + 1}: starting a server with capture off and one with capture on ...")
    procs: dict[str, Any] = {}
    try:
        ready: dict[str, float] = {}
        ports: dict[str, int] = {}
        for mode in MODES:
            procs[mode], ports[mode], ready[mode] = sv.start_server(
                "nightshift", model["name"], state, state / f"capture-{mode}-{key}.log", env=mode_env(mode, folder))
        pids = {m: sv.process_tree(p.pid) for m, p in procs.items()}
        out = sv._run_child(["-m", "benchmarks.capture", "--child", "load", "--payload", str(payload_path),
                             *[f"--{m}={ports[m]}:{','.join(map(str, pids[m]))}" for m in MODES],
                             "--warmup", str(options["warmup"]), "--requests", str(options["requests"]),
                             "--connections", str(options["connections"]),
                             "--concurrent-requests", str(options["concurrent_requests"]),
                             "--concurrent-seconds", str(options["concurrent_seconds"])],
                            state, 2 * sv.CHILD_TIMEOUT, "capture load child")
        result = json.loads(out.strip().splitlines()[-1])
        counters = scrape_capture(ports["on"], model["name"])
    finally:
        for proc in procs.values():
            sv.stop_server(proc)
    counters["file_rows"], counters["parts"] = captured_rows(folder, model["name"])
    shutil.rmtree(folder, ignore_errors=True)
    for mode in MODES:
        result[mode].update(mode=mode, ready_seconds=ready[mode], capture=counters if mode == "on" else {})
        s, c = result[mode]["single"], result[mode]["concurrent"]
        log(f"[capture] {key:<5} capture {mode:<3} 1 conn: p50 {s['p50_ms']:.2f} ms  p99 {s['p99_ms']:.2f} ms  "
            f"{s['rps']:.0f} req/s  |  {c['connections']} conn: {c['rps']:.0f} req/s  p99 {c['p99_ms']:.1f} ms  "
            f"|  errors {s['errors'] + c['errors']}"
            + (f"  |  captured {counters.get('offered_rows', 0):.0f} rows, dropped "
               f"{counters.get('dropped_rows', 0):.0f}, in files {counters['file_rows']}" if mode == "on" else ""))
    return result


def paired_ratio(runs: dict[str, list[dict[str, Any]]], phase: str, stat: str) -> float:
    """The median over runs of capture on / off within each run."""
    return sv._median([on[phase][stat] / off[phase][stat] for on, off in zip(runs["on"], runs["off"])])


def run_benchmark(keys: list[str], *, state_dir: Path | None = None, repeat: int = 1, warmup: int = sv.WARMUP,
                  requests: int = sv.SINGLE_REQUESTS, connections: int = sv.CONCURRENCY,
                  concurrent_requests: int = sv.CONCURRENT_REQUESTS, concurrent_seconds: float = sv.CONCURRENT_SECONDS,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train/promote the models (shared with the serving benchmark's --state-dir), then capture off vs on."""
    log = log or sv._log_default
    options = {"warmup": warmup, "requests": requests, "connections": connections,
               "concurrent_requests": concurrent_requests, "concurrent_seconds": concurrent_seconds}
    results: dict[str, Any] = {
        "benchmark": "capture",
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "loadavg_at_start": list(os.getloadavg())},
        "versions": sv._versions(),
        "targets": {"model": TARGET_MODEL, "rps_ratio": TARGET_RPS_RATIO, "p99_ratio": TARGET_P99_RATIO},
        "options": options | {"repeat": max(repeat, 1)},
        "models": {},
    }
    temp = None if state_dir else tempfile.mkdtemp(prefix="nightshift-bench-capture-")
    state = Path(state_dir or temp).resolve()  # type: ignore[arg-type]
    state.mkdir(parents=True, exist_ok=True)
    try:
        manifest = sv.prepare_models(state, keys, log)
        for key in keys:
            model = manifest[key]
            runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
            for r in range(max(repeat, 1)):
                measured = measure(key, model, state, options, r, log)
                for mode in MODES:
                    runs[mode].append(measured[mode])
            summary = {m: sv.summarize(rs) for m, rs in runs.items()}
            results["models"][key] = {
                "name": model["name"], "version": model["version"], "title": sv.MODELS[key]["title"],
                "features": len(model["features"]), "summary": summary,
                "runs": {m: [{k: v for k, v in run.items() if k != "sanity"} for run in rs] for m, rs in runs.items()},
                "same_predictions": all(run["sanity"] == runs["off"][0]["sanity"]
                                        for rs in runs.values() for run in rs),
                "capture": [run["capture"] for run in runs["on"]],
                # medians of each run's own on/off ratio: both sides of a run met the same load on the machine
                "ratio_single_rps": paired_ratio(runs, "single", "rps"),
                "ratio_concurrent_rps": paired_ratio(runs, "concurrent", "rps"),
                "ratio_single_p50": paired_ratio(runs, "single", "p50_ms"),
                "ratio_single_p99": paired_ratio(runs, "single", "p99_ms"),
                "ratio_concurrent_p99": paired_ratio(runs, "concurrent", "p99_ms"),
                "ratio_server_cpu": paired_ratio(runs, "single", "server_cpu_ms_per_request"),
            }
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    results["state_dir"] = None if temp else str(state)
    results["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results["verdicts"] = verdicts(results)
    return results


def verdicts(results: dict[str, Any]) -> list[dict[str, str]]:
    """PASS/FAIL for the targets on TARGET_MODEL; the same checks reported for the other models."""
    out: list[dict[str, str]] = []
    for key, m in results["models"].items():
        tag = "target" if key == TARGET_MODEL else "report"
        off, on = m["summary"]["off"], m["summary"]["on"]  # medians over runs (the ratios: of each run's on/off)
        for phase, ratio in (("single", m["ratio_single_rps"]), ("concurrent", m["ratio_concurrent_rps"])):
            conns = "1 connection" if phase == "single" else f"{on[phase]['connections']:.0f} connections"
            out.append({"model": key, "kind": tag, "target": f"requests/s on {conns}",
                        "status": "PASS" if ratio >= TARGET_RPS_RATIO else "FAIL",
                        "detail": f"{key}: capture on {on[phase]['rps']:.0f} vs off {off[phase]['rps']:.0f} req/s "
                                  f"(medians), on/off within a run {ratio:.2f}x ({(1 - ratio) * 100:.1f}% loss), "
                                  f"target >= {TARGET_RPS_RATIO}x"})
        ratio = m["ratio_single_p99"]
        out.append({"model": key, "kind": tag, "target": "single-row p99",
                    "status": "PASS" if ratio <= TARGET_P99_RATIO else "FAIL",
                    "detail": f"{key}: capture on {on['single']['p99_ms']:.2f} ms vs off {off['single']['p99_ms']:.2f} "
                              f"ms (medians), on/off within a run {ratio:.2f}x, target <= {TARGET_P99_RATIO}x"})
        errors = sum(m["summary"][mode][ph]["errors"] for mode in MODES for ph in ("single", "concurrent"))
        lost = [c for c in m["capture"] if c.get("dropped_rows", 0) or c.get("write_errors", 0)
                or c.get("file_rows") != c.get("offered_rows")]
        out.append({"model": key, "kind": tag, "target": "everything captured, nothing failed",
                    "status": "PASS" if not lost and errors == 0 and m["same_predictions"] else "FAIL",
                    "detail": f"{key}: failed requests {errors}; rows offered / dropped / in files per run: "
                              + ", ".join(f"{c.get('offered_rows', 0):.0f}/{c.get('dropped_rows', 0):.0f}/"
                                          f"{c.get('file_rows', 0)}" for c in m["capture"])
                              + f"; same predictions on and off: {'yes' if m['same_predictions'] else 'NO'}"})
    if TARGET_MODEL not in results["models"]:
        out.insert(0, {"model": TARGET_MODEL, "kind": "target", "target": "capture targets", "status": "NOT MEASURED",
                       "detail": f"the {TARGET_MODEL} model was not run"})
    return out


def print_results(results: dict[str, Any]) -> None:
    """One table per model (capture off, on, ratio on/off), then the verdicts."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 200)
    opts = results["options"]
    conns = opts["connections"]
    for m in results["models"].values():
        table = Table(title=f"Capture benchmark: {m['title']} ({m['name']} v{m['version']}), POST /invocations, one "
                            f"row per request, capture of every request vs capture off", title_justify="left")
        for name in ("capture", "p50 ms", "p99 ms", "req/s 1 conn", f"p50 ms {conns} conn", f"p99 ms {conns} conn",
                     f"req/s {conns} conn", "server CPU ms/req", "errors"):
            table.add_column(name, justify="left" if name == "capture" else "right")
        for mode in MODES:
            one, many = m["summary"][mode]["single"], m["summary"][mode]["concurrent"]
            table.add_row(mode, f"{one['p50_ms']:.2f}", f"{one['p99_ms']:.2f}", f"{one['rps']:.0f}",
                          f"{many['p50_ms']:.2f}", f"{many['p99_ms']:.2f}", f"{many['rps']:.0f}",
                          f"{one['server_cpu_ms_per_request']:.2f}", str(one["errors"] + many["errors"]))

        def mark(value: float, ok: bool) -> str:
            return f"{value:.2f}x" if ok else f"[red]{value:.2f}x[/red]"

        table.add_row("ratio on/off", f"{m['ratio_single_p50']:.2f}x",
                      mark(m["ratio_single_p99"], m["ratio_single_p99"] <= TARGET_P99_RATIO),
                      mark(m["ratio_single_rps"], m["ratio_single_rps"] >= TARGET_RPS_RATIO), "",
                      f"{m['ratio_concurrent_p99']:.2f}x",
                      mark(m["ratio_concurrent_rps"], m["ratio_concurrent_rps"] >= TARGET_RPS_RATIO),
                      f"{m['ratio_server_cpu']:.2f}x", "", end_section=True)
        console.print(table)
        for i, c in enumerate(m["capture"]):
            console.print(f"  run {i + 1}: {c.get('offered_rows', 0):.0f} rows captured, "
                          f"{c.get('dropped_rows', 0):.0f} dropped, {c.get('file_rows', 0)} in {c.get('parts', 0)} "
                          f"Parquet part(s) after SIGTERM")
        console.print()
    machine = results["machine"]
    console.print(f"Load generator: per server {opts['requests']} sequential one-row requests after {opts['warmup']} "
                  f"warm-up, then {conns} connections sharing at most {opts['concurrent_requests']} requests or "
                  f"{opts['concurrent_seconds']:g} s; the two servers take turns ({BLOCK} sequential requests, then "
                  f"{SLICES} concurrent slices each), so other load on the {machine['cpus']} shared cores hits both "
                  f"alike (load average at start {machine['loadavg_at_start'][0]:.2f}). Medians over "
                  f"{opts['repeat']} run(s), both servers started fresh for each; the ratios are medians of each "
                  f"run's own on/off ratio.")
    console.print()
    print_verdicts(console, results["verdicts"])


def write_results(results: dict[str, Any]) -> Path:
    """Save the full results as JSON under benchmarks/results/."""
    return save_results("capture", results)


def child_main(argv: list[str] | None = None) -> int:
    """Entry point of the load subprocess: prints its result as one JSON line on stdout."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", choices=("load",), required=True)
    parser.add_argument("--payload", type=Path, required=True)
    for mode in MODES:
        parser.add_argument(f"--{mode}", required=True, metavar="PORT:PIDS", help=f"the capture-{mode} server")
    parser.add_argument("--warmup", type=int, default=sv.WARMUP)
    parser.add_argument("--requests", type=int, default=sv.SINGLE_REQUESTS)
    parser.add_argument("--connections", type=int, default=sv.CONCURRENCY)
    parser.add_argument("--concurrent-requests", type=int, default=sv.CONCURRENT_REQUESTS)
    parser.add_argument("--concurrent-seconds", type=float, default=sv.CONCURRENT_SECONDS)
    args = parser.parse_args(argv)
    ports, pids = {}, {}
    for mode in MODES:
        port, _, ids = getattr(args, mode).partition(":")
        ports[mode], pids[mode] = int(port), [int(p) for p in ids.split(",") if p]
    result = load_child(ports, pids, args.payload, args.warmup, args.requests, args.connections,
                        args.concurrent_requests, args.concurrent_seconds)
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(child_main())
