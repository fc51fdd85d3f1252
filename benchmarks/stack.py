"""The fleet on the stack: N small catalogue models x 2 nights through `fleet` with `via_deployments`, on `make stack`'s
parts (PostgreSQL, Prefect and MLflow servers with auth, W process workers of one flow run each).

The first measured night trains, gates and promotes every model (no champion yet); the second one monitors the new
champion on the next day's rows and retrains only if something moved. Reported: wall time of the fleet run; every
part's peak memory (VmHWM: each process's exact peak; PostgreSQL's and MLflow's summed over their processes as
sampled); the CPU of everything meanwhile (servers, workers, the flow-run processes they start, the fleet's own
process) and the CPU floor = that CPU / cores; failed model-nights, 503s in any log, and the champions and audit
records checked against the fleet's rows.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks import fleet
from benchmarks.serving import ROOT, machine_seconds

MODELS = 50
QUICK_MODELS = 6
WORKERS = 4
NIGHTS = 2
ROWS = fleet.ROWS
SAMPLE_SECONDS = 0.5
# How a 503 shows in the parts' logs: Prefect's client retrying, httpx's error, MLflow's retry message.
_HTTP_503 = r"status code 503|503 Service Unavailable|503 error"
TIMEOUT = 3 * 3600.0


def _cpu_of_tree(pid: int) -> float:
    """CPU-seconds of `pid`, of its descendants alive now and of those it (or they) reaped."""
    import psutil

    total = 0.0
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            continue
    return total


class Sampler:
    """Each role's peak memory (exact per-process VmHWM; summed RSS for multi-process parts) and CPU deltas."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self.peaks: dict[str, float] = {}
        self.flow_run_peak = 0.0
        self.processes: dict[str, int] = {}
        self.cpu_start = {name: _cpu_of_tree(pid) for name, pid in roots.items()}

    def sample(self) -> None:
        import psutil

        for name, pid in self.roots.items():
            try:
                root = psutil.Process(pid)
                kids = root.children(recursive=True)
            except psutil.Error:
                continue
            role = name.split("-")[0] if name.startswith("worker") else name
            if role == "worker":  # the worker itself; its children are flow-run processes
                self._peak(role, _hwm(pid))
                for kid in kids:
                    self.flow_run_peak = max(self.flow_run_peak, _hwm(kid.pid))
            else:  # a server of several processes: their proportional set sizes summed (shared pages once)
                self._peak(role, sum(_pss(p) for p in [pid, *(k.pid for k in kids)]))
                self.processes[role] = max(self.processes.get(role, 0), 1 + len(kids))

    def _peak(self, role: str, mb: float) -> None:
        self.peaks[role] = max(self.peaks.get(role, 0.0), mb)

    def cpu(self) -> dict[str, float]:
        return {name: _cpu_of_tree(pid) - self.cpu_start[name] for name, pid in self.roots.items()}


def _status(pid: int, field: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _hwm(pid: int) -> float:
    return _status(pid, "VmHWM")


def _pss(pid: int) -> float:
    """Proportional set size in MB: each shared page split among the processes sharing it."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postmaster(pg_dir: str) -> int:
    return int((Path(pg_dir) / "postmaster.pid").read_text().split()[0])


def run_benchmark(count: int, rows: int, workers: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Land the data, start a stack in a temp dir, run the fleet over 2 nights via deployments, check, measure."""
    import yaml

    from deployments import stack

    base = Path(tempfile.mkdtemp(prefix="nightshift-bench-stack-"))
    base.chmod(0o755)  # PostgreSQL runs as its own user: it must reach its data dir
    state = base / "state"
    names = fleet.model_names(count)
    try:
        cfg = stack.StackConfig(state, pg_port=free_port(), prefect_port=free_port(), mlflow_port=free_port(),
                                server_port=free_port(), workers=workers, worker_limit=1, model_server=False,
                                env={"PREFECT_WORKER_QUERY_SECONDS": "2"})
        started = time.perf_counter()
        catalogue = fleet.prepare(cfg.data_dir, count, rows)  # where the stack's clients and workers look
        doc = yaml.safe_load(catalogue.read_text())
        for model in doc["models"]:  # never a real 02:00 run during the benchmark
            model["schedule"] = {"cron": "0 0 1 1 *", "timezone": "UTC"}
        catalogue.write_text(yaml.safe_dump(doc, sort_keys=False))
        cfg.env["NIGHTSHIFT_CATALOGUE_PATH"] = str(catalogue)
        log(f"[stack] {count} models x {fleet.NIGHTS} nights of {rows:,} rows landed in "
            f"{time.perf_counter() - started:.0f} s; starting the stack with {workers} workers ...")
        started = time.perf_counter()
        running = stack.start(cfg, log=lambda line: log(f"[stack]   {line}"))
        startup = time.perf_counter() - started
        try:
            return _measure(cfg, running, names, startup, log)
        finally:
            stack.stop(state, log=lambda line: log(f"[stack] {line}"))
            kept = ROOT / "benchmarks" / "results" / "stack-logs"  # the parts' logs, for a look afterwards
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(cfg.home / "logs", kept)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _measure(cfg: Any, running: Any, names: list[str], startup: float, log: Callable[[str], None]) -> dict[str, Any]:
    from deployments import stack

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "NIGHTSHIFT_"))}
    env |= stack.read_env_file(cfg.home / "client.env")
    first = fleet.measured_night() - timedelta(days=NIGHTS - 1)
    last = fleet.measured_night()
    fleet_log = cfg.home / "logs" / "fleet.log"
    with fleet_log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "flows.fleet", "--night", str(first), "--until", str(last),
                                 "--models", *names, "--concurrency", str(cfg.workers), "--via-deployments"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        roots = {**running.pids, "postgres": _postmaster(running.pg_dir)}
        sampler = Sampler(roots)
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        machine_before, _ = machine_seconds()
        started = time.time()
        deadline = time.monotonic() + TIMEOUT
        fleet_peak = 0.0
        while proc.poll() is None and time.monotonic() < deadline:
            sampler.sample()
            fleet_peak = max(fleet_peak, _hwm(proc.pid))
            time.sleep(SAMPLE_SECONDS)
        wall = time.time() - started
        proc.wait(timeout=60)
        cpu = sampler.cpu()
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the fleet process, reaped: its CPU
        cpu["fleet"] = (children_after.ru_utime + children_after.ru_stime
                        - children_before.ru_utime - children_before.ru_stime)
        machine_after, _ = machine_seconds()
    text = fleet_log.read_text(errors="replace")
    logs = "\n".join(p.read_text(errors="replace") for p in (cfg.home / "logs").glob("*.log"))
    rows = _rows(text, names, first, last)
    checks = _check(cfg, names, rows, env)
    total_cpu = sum(cpu.values())
    cores = os.cpu_count() or 1
    result = {"benchmark": "stack", "models": len(names), "nights": NIGHTS, "workers": cfg.workers,
              "cores": cores, "fleet_exit": proc.returncode, "wall_seconds": wall, "startup_seconds": startup,
              "cpu_seconds": cpu, "total_cpu_seconds": total_cpu, "cpu_floor_seconds": total_cpu / cores,
              "wall_over_floor": wall / (total_cpu / cores), "machine_cpu_seconds": machine_after - machine_before,
              "peak_mb": sampler.peaks | {"fleet": fleet_peak, "flow run (largest)": sampler.flow_run_peak},
              "processes": sampler.processes,
              "model_nights": len(rows), "failed": sum(r["state"] != "Completed" for r in rows),
              "http_503_lines": len(lines_503 := [ln for ln in logs.splitlines() if re.search(_HTTP_503, ln)]),
              "lines_503": lines_503[:10], "actions": _count(r["action"] for r in rows),
              **checks}
    log(f"[stack] {len(rows)} model-nights in {wall:.0f} s ({result['failed']} failed, exit {proc.returncode}); CPU "
        f"{total_cpu:.0f} s, floor {result['cpu_floor_seconds']:.0f} s, wall/floor {result['wall_over_floor']:.2f}")
    return result


def _rows(text: str, names: list[str], first: Any, last: Any) -> list[dict[str, Any]]:
    """The fleet's printed rows: '<night> <model>: <action or state> (champion <v>) <note>'."""
    rows = []
    for match in re.finditer(r"(\d{4}-\d\d-\d\d) (\S+): (\S+) \(champion (\S+)\)", text):
        night, name, action, champion = match.groups()
        if name in names:
            state = "Completed" if action not in {"Failed", "Crashed", "Cancelled", "TimedOut"} else action
            rows.append({"night": night, "model_name": name, "action": action, "state": state,
                         "champion": None if champion == "-" else champion})
    return rows


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts


def _check(cfg: Any, names: list[str], rows: list[dict[str, Any]], env: dict[str, str]) -> dict[str, Any]:
    """Every model ran both nights; its registry champion is the last night's; its audit's last promotion names it."""
    out = subprocess.run([sys.executable, "-c", _CHECK, json.dumps(names)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600, check=False)
    if out.returncode != 0:
        return {"check_error": out.stderr[-2000:]}
    registry = json.loads(out.stdout.strip().splitlines()[-1])
    last = {}
    for r in rows:
        last[r["model_name"]] = r
    wrong = [n for n in names if n not in last or registry[n]["champion"] != last[n]["champion"]
             or registry[n]["champion"] is None or registry[n]["audit_to"] != registry[n]["champion"]]
    missing = len(names) * NIGHTS - len(rows)
    return {"champions_ok": len(names) - len(wrong), "wrong": wrong[:10], "rows_missing": missing}


_CHECK = """
import json, sys
from nightshift.settings import get_settings
from tasks.registry.audit import read_audit
from tasks.registry.store import TrackingConfig
from tasks.registry.versions import CHAMPION, get_alias
cfg = TrackingConfig.from_settings(get_settings())
out = {}
for name in json.loads(sys.argv[1]):
    records = [r for r in read_audit(cfg, name) if r.action in ("promote", "rollback")]
    out[name] = {"champion": get_alias(cfg, name, CHAMPION), "audit_to": records[-1].to_version if records else None}
print(json.dumps(out))
"""


def print_results(result: dict[str, Any]) -> None:
    """The table README shows."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"The fleet on the stack: {result['models']} models x {result['nights']} nights via "
                        f"deployments, {result['workers']} workers, {result['cores']} cores", title_justify="left")
    for name in ("wall s", "CPU s (all parts)", "CPU floor s", "wall / floor", "model-nights", "failed", "503s",
                 "champions + audit ok"):
        table.add_column(name, justify="right")
    table.add_row(f"{result['wall_seconds']:.0f}", f"{result['total_cpu_seconds']:.0f}",
                  f"{result['cpu_floor_seconds']:.0f}", f"{result['wall_over_floor']:.2f}",
                  str(result["model_nights"]), str(result["failed"]), str(result["http_503_lines"]),
                  f"{result.get('champions_ok', 0)}/{result['models']}")
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    peaks = Table(title="Peak memory per part, MB (a server of several processes: PSS summed, each shared page "
                        "counted once; one process: its VmHWM)", title_justify="left")
    for part in result["peak_mb"]:
        peaks.add_column(part, justify="right")
    peaks.add_row(*(f"{mb:.0f}" for mb in result["peak_mb"].values()))
    console.print(peaks)
    cpu = ", ".join(f"{k} {v:.0f}" for k, v in sorted(result["cpu_seconds"].items(), key=lambda kv: -kv[1]))
    print(f"CPU-seconds by part (a worker's include its flow-run processes): {cpu}")
    print(f"actions: {result['actions']}; stack start-up {result['startup_seconds']:.0f} s (not in wall)")
    if result.get("wrong") or result.get("check_error") or result["failed"]:
        print(f"FAILED checks: {result.get('wrong') or result.get('check_error')}; failed {result['failed']}")


def passed(result: dict[str, Any]) -> bool:
    """Every model-night Completed, every champion and audit record where it should be, the fleet run Completed."""
    return (not result["failed"] and not result.get("wrong") and "check_error" not in result
            and not result.get("rows_missing") and result["fleet_exit"] == 0)


if __name__ == "__main__":  # make bench BENCH_ARGS="--only stack" runs it too
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.stack", description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=MODELS)
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "stack.json")
    a = parser.parse_args()
    outcome = run_benchmark(a.models, a.rows, a.workers)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(outcome, indent=2, default=str))
    print_results(outcome)
    sys.exit(0 if passed(outcome) else 1)
