"""`make screenshots`: the README's pictures (docs/*.png), taken by headless chromium from a real demo week.

In a fresh temporary folder (its own state dir and Prefect home; `.nightshift/` is never read or written) it starts a
real `prefect server` on a free loopback port, registers the deployments as `make deploy` does (work pool + `prefect
deploy --all`), runs `python -m cli.demo` against that server (the week's flow runs and artifacts land in it), starts
a process worker and runs demo-churn's last night once more through its deployment, starts `mlflow ui` on the week's
SQLite and artifacts, then has Debian's chromium (Playwright, headless, 1440 px wide) photograph the pages the README
shows. Pages are waited for by their content, never by fixed sleeps: a page without what it should show fails the run
naming the page, and docs/ is only written when every picture was taken. Every process it started is stopped (SIGTERM,
SIGKILL after 10 s) and the folder removed (kept after a failure, for its logs).

    .venv/bin/python docs/screenshots.py [--out docs] [--keep]     # --keep: leave the folder (state, logs) behind
    .venv/bin/python docs/screenshots.py --reuse DIR               # photograph a kept folder again (no new week)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1440, 900
MAX_PNG_BYTES = 400_000
POOL = "nightshift-process"
MODEL = "demo-churn"  # the catalogue model whose deployment, night and registry page the README shows
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--no-proxy-server"]


class ShotError(RuntimeError):
    """A page, a run or a file the pictures need is missing; the message names it."""


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without Prefect, nightshift and MLflow location settings (none may leak in), plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "NIGHTSHIFT_", "MLFLOW_TRACKING", "MLFLOW_REGISTRY"))}
    env.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_CLI_PROMPT": "false",
                "MLFLOW_DISABLE_TELEMETRY": "true", "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
                **extra})
    return env


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL what is left of it after `grace` s (the 3.9 process worker may ignore
    SIGTERM; `mlflow ui` leaves job consumers behind when its leader exits)."""
    def group_alive() -> bool:
        proc.poll()  # reap the leader, or it counts as a member
        try:
            os.killpg(proc.pid, 0)
            return True
        except ProcessLookupError:
            return False

    if not group_alive():
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while group_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_alive():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@dataclass
class Stack:
    """The temporary world: a state dir, a Prefect home, logs, and the processes started on them (stopped by PID)."""

    base: Path
    prefect_port: int = field(default_factory=free_port)
    mlflow_port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def logs(self) -> Path:
        return self.base / "logs"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def prefect_ui(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}"

    @property
    def mlflow_ui(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def env(self) -> dict[str, str]:
        home = self.base / "prefect-home"
        return clean_env(NIGHTSHIFT_STATE_DIR=str(self.state), NIGHTSHIFT_WORK_POOL=POOL, PREFECT_HOME=str(home),
                         PREFECT_PROFILES_PATH=str(home / "profiles.toml"), PREFECT_API_URL=self.api_url)

    def prepare(self) -> None:
        for folder in (self.state, self.logs, self.base / "prefect-home", self.base / "shots"):
            folder.mkdir(parents=True, exist_ok=True)

    def spawn(self, name: str, cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
        """Start a long-running process in its own process group, its output in logs/<name>.log."""
        with (self.logs / f"{name}.log").open("w") as log:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.processes.append(proc)
        return proc

    def serve(self, name: str, cmd: list[str], cwd: Path, env: dict[str, str], health: str, timeout: float) -> None:
        """spawn() a server and wait until `health` answers 200 (or fail with its log)."""
        proc = self.spawn(name, cmd, cwd, env)
        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False, timeout=3) as client:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise ShotError(f"{name} exited ({proc.returncode}): "
                                    f"{(self.logs / f'{name}.log').read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(health).status_code == 200:
                        return
                time.sleep(0.5)
        raise ShotError(f"{name} did not answer {health} in {timeout:.0f} s; log {self.logs / f'{name}.log'}")

    def run(self, name: str, cmd: list[str], timeout: float) -> None:
        """Run a program from the project root against this world; fail with its output's tail."""
        log_path = self.logs / f"{name}.log"
        started = time.perf_counter()
        with log_path.open("w") as log:
            try:
                done = subprocess.run(cmd, cwd=PROJECT_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                      timeout=timeout, start_new_session=True)
            except subprocess.TimeoutExpired:
                raise ShotError(f"{name} did not finish in {timeout:.0f} s; log {log_path}") from None
        if done.returncode != 0:
            raise ShotError(f"{name} failed ({done.returncode}): {log_path.read_text()[-3000:]}")
        print(f"  {name}: {time.perf_counter() - started:.0f} s", flush=True)

    def start_prefect(self) -> None:
        # From the temp folder: the project's [tool.prefect] table is not read. The UI asks this API, not :4200.
        env = {**self.env, "PREFECT_SERVER_UI_API_URL": self.api_url,
               "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false"}
        env.pop("PREFECT_API_URL")
        self.serve("prefect-server", [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                      "--port", str(self.prefect_port)], self.base, env, f"{self.api_url}/health", 240)
        print(f"  prefect server: {self.prefect_ui}", flush=True)

    def start_worker(self) -> None:
        """A process worker for the pool (`make worker`), from the project root like the deployments' pull step."""
        self.spawn("worker", [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL,
                              "--prefetch-seconds", "5"], PROJECT_ROOT, self.env)

    def start_mlflow(self) -> None:
        mlflow = Path(sys.executable).with_name("mlflow")
        self.serve("mlflow-ui", [str(mlflow), "ui", "--backend-store-uri", f"sqlite:///{self.state / 'mlflow.db'}",
                                 "--default-artifact-root", str(self.state / "mlartifacts"), "--host", "127.0.0.1",
                                 "--port", str(self.mlflow_port), "--workers", "1"],
                   self.base, self.env, f"{self.mlflow_ui}/health", 180)
        print(f"  mlflow ui: {self.mlflow_ui}", flush=True)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            stop(proc)
        self.processes.clear()

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, f"{self.api_url}{path}", timeout=30, trust_env=False, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None


@dataclass(frozen=True)
class Night:
    """demo-churn's night that promoted: its model-night run (the monitor's checks inside it), its artifacts."""

    night: str
    run_id: str
    monitor_name: str | None
    nightly_artifact: str
    gate_artifact: str


def promoted_night(stack: Stack) -> Night:
    """The newest model-night run of MODEL whose night promoted a challenger (its 'nightly-…' table says so)."""
    nights = stack.api("POST", "/artifacts/filter", json={
        "artifacts": {"key": {"any_": [f"nightly-{MODEL}"]}}, "sort": "CREATED_DESC", "limit": 50})
    promoted = [a for a in nights if (a.get("description") or "").endswith(": promoted")]
    if not promoted:
        raise ShotError(f"no model-night run of {MODEL} promoted a challenger (its 'nightly-{MODEL}' artifacts say "
                        f"{[a.get('description') for a in nights]}); see logs/demo.log")
    nightly = promoted[0]
    rows = json.loads(nightly["data"]) if isinstance(nightly.get("data"), str) else nightly.get("data") or []
    night = next((r["result"] for r in rows if isinstance(r, dict) and r.get("step") == "night"), None)
    run_id = nightly["flow_run_id"]
    if night is None:
        raise ShotError(f"the 'nightly-{MODEL}' artifact of flow run {run_id} has no 'night' row: {rows}")
    gates = stack.api("POST", "/artifacts/filter", json={
        "artifacts": {"key": {"any_": [f"gate-{MODEL}"]}, "flow_run_id": {"any_": [run_id]}}})
    if not gates:
        raise ShotError(f"the promoting night {night} of {MODEL} (flow run {run_id}) has no 'gate-{MODEL}' artifact")
    run = stack.api("GET", f"/flow_runs/{run_id}")  # the monitor's checks ran inside it: its reports bear its name
    return Night(night, run_id, run.get("name"), nightly["id"], gates[0]["id"])


def drift_report(stack: Stack, night: Night) -> Path:
    """Evidently's HTML report of the promoting night's run (its folder ends in the run's name), else the
    most drifted report of MODEL (by the drift share in the JSON beside it)."""
    folder = stack.state / "reports" / MODEL
    reports = sorted(folder.glob("*/drift_report.html"))
    own = [r for r in reports if night.monitor_name and r.parent.name.endswith(f"-{night.monitor_name}")]
    if own:
        return own[0]

    def share(html: Path) -> float:
        verdicts = html.with_suffix(".json")
        return float(json.loads(verdicts.read_text()).get("drift_share") or 0) if verdicts.exists() else 0.0

    if not reports:
        raise ShotError(f"no Evidently HTML report under {folder}: no night of {MODEL} drifted (see logs/demo.log)")
    return max(reports, key=share)


def run_through_deployment(stack: Stack, deployment_id: str, night: str, timeout: float = 900) -> None:
    """MODEL's `night` once more as a run of its deployment, picked up by the worker (a rerun changes nothing), so
    the deployment page shows a run its worker finished; skipped if the deployment has a completed run already."""
    done = stack.api("POST", "/flow_runs/filter", json={
        "deployments": {"id": {"any_": [deployment_id]}}, "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}})
    if done:
        return
    started = time.perf_counter()
    run = stack.api("POST", f"/deployments/{deployment_id}/create_flow_run", json={
        "parameters": {"params": {"model_name": MODEL, "night": night}}})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = stack.api("GET", f"/flow_runs/{run['id']}")
        if run["state_type"] in FINAL:
            break
        time.sleep(2)
    if run["state_type"] != "COMPLETED":
        raise ShotError(f"model-night/{MODEL} deployment run {run['id']} for night {night} ended "
                        f"{run['state_type']} (or not in {timeout:.0f} s); see logs/worker.log")
    print(f"  deployment run of {MODEL}'s night {night}: {time.perf_counter() - started:.0f} s", flush=True)


@dataclass(frozen=True)
class Targets:
    """Everything the pictures show, looked up in the servers and the state dir."""

    deployment_id: str
    automation_id: str
    night: Night
    report: Path
    week_chart: Path | None


def find_targets(stack: Stack) -> Targets:
    """The deployment and its trigger, the night that promoted, its drift report, the week's chart (if drawn)."""
    try:
        deployment = stack.api("GET", f"/deployments/name/model-night/{MODEL}")
    except httpx.HTTPStatusError:
        raise ShotError(f"deployment model-night/{MODEL} is not on the server: did the deploy step run?") from None
    automation = next((a for a in stack.api("POST", "/automations/filter", json={})
                       if a["name"] == f"{MODEL}-on-drift"), None)
    if automation is None:
        raise ShotError(f"no automation '{MODEL}-on-drift' on the server: the deployment's trigger was not created")
    night = promoted_night(stack)
    charts = sorted((stack.state / "reports").glob("demo-week-*.png"))
    return Targets(deployment["id"], automation["id"], night, drift_report(stack, night),
                   charts[-1] if charts else None)


@contextlib.contextmanager
def browser(profile: Path) -> Iterator[Any]:
    """Headless Debian chromium (Playwright cannot download its own browsers here), fresh profile, UTC."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        raise ShotError("chromium is not installed: apt-get install -y chromium")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=executable, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": WIDTH, "height": HEIGHT}, device_scale_factor=1, locale="en-US", timezone_id="UTC")
        try:
            yield context
        finally:
            context.close()


def wait_for(page: Any, what: str, *locators: Any, timeout: float = 60_000) -> None:
    """Every locator visible, or ShotError naming the page and the missing content."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    for locator in locators:
        try:
            locator.first.wait_for(state="visible", timeout=timeout)
        except PlaywrightTimeoutError:
            raise ShotError(f"{what} ({page.url}) never showed {locator}") from None


def settle(page: Any) -> None:
    """Let the page's last requests (a run graph, table rows) finish; Prefect's UI polls, so never wait > 10 s."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    with contextlib.suppress(PlaywrightTimeoutError):
        page.wait_for_load_state("networkidle", timeout=10_000)


def prefect_deployment(page: Any, stack: Stack, t: Targets) -> None:
    """model-night/demo-churn: its 02:00 UTC schedule and drift trigger (right), its runs (the worker's rerun)."""
    page.goto(f"{stack.prefect_ui}/deployments/deployment/{t.deployment_id}", wait_until="domcontentloaded")
    wait_for(page, f"Prefect deployment page of model-night/{MODEL}", page.get_by_text("At 02:00 AM every day"),
             page.get_by_text(f"{MODEL}-on-drift"), page.get_by_text("Completed", exact=True),
             page.get_by_text("Ready", exact=True))
    settle(page)


def prefect_trigger(page: Any, stack: Stack, t: Targets) -> None:
    """The trigger's automation opened for editing (read, never saved): the event and resource it waits for."""
    page.goto(f"{stack.prefect_ui}/automations/automation/{t.automation_id}/edit", wait_until="domcontentloaded")
    wait_for(page, f"Prefect automation page of {MODEL}-on-drift", page.get_by_text("nightshift.drift.detected"),
             page.get_by_text(f"nightshift.model.{MODEL}"))
    settle(page)


def prefect_flow_run(page: Any, stack: Stack, t: Targets) -> None:
    """The promoting night's model-night run: its graph (the monitor's and training's tasks, gate, alias move),
    artifacts."""
    page.goto(f"{stack.prefect_ui}/runs/flow-run/{t.night.run_id}", wait_until="domcontentloaded")
    what = f"Prefect flow run page of {MODEL}'s night {t.night.night}"
    wait_for(page, what, page.locator("li.p-tab", has_text="Artifacts"))
    page.locator("li.p-tab", has_text="Artifacts").first.click()
    wait_for(page, what, page.get_by_text(f"nightly-{MODEL}", exact=True),
             page.get_by_text(f"gate-{MODEL}", exact=True), page.locator("canvas"))
    settle(page)


def prefect_night_table(page: Any, stack: Stack, t: Targets) -> None:
    """The night's table artifact: batch, validation, drift, why it retrained, the gate, the alias move."""
    page.goto(f"{stack.prefect_ui}/artifacts/artifact/{t.night.nightly_artifact}", wait_until="domcontentloaded")
    wait_for(page, f"Prefect artifact nightly-{MODEL} of night {t.night.night}",
             page.get_by_text("retrain because", exact=True),
             page.get_by_text("promoted", exact=True))


def prefect_gate(page: Any, stack: Stack, t: Targets) -> None:
    """The gate's markdown artifact: challenger vs champion on the newest labeled day, with its CI."""
    page.goto(f"{stack.prefect_ui}/artifacts/artifact/{t.night.gate_artifact}", wait_until="domcontentloaded")
    wait_for(page, f"Prefect artifact gate-{MODEL} of night {t.night.night}", page.get_by_text("Gate: PROMOTE"),
             page.get_by_text("improvement", exact=True))


def mlflow_aliases(page: Any, stack: Stack, t: Targets) -> None:
    """The registered model page: every version, `champion` and `previous` aliases; tall enough for all versions."""
    page.goto(f"{stack.mlflow_ui}/#/models/{MODEL}", wait_until="domcontentloaded")
    what = f"MLflow registered model page of {MODEL}"
    champion, previous = (page.get_by_text(re.compile(rf"^@\s*{alias}$")) for alias in ("champion", "previous"))
    wait_for(page, what, champion, previous)
    close = page.get_by_role("button", name="Close", exact=True)  # the assistant panel a fresh profile opens
    if page.get_by_text("MLflow Assistant").first.is_visible() and close.count() == 1:
        close.click()
        close.wait_for(state="hidden")
    settle(page)
    overflow = page.locator("main").first.evaluate("main => main.scrollHeight - main.clientHeight")
    page.set_viewport_size({"width": WIDTH, "height": min(HEIGHT + max(overflow, 0) + 16, 2400)})
    wait_for(page, what, previous)


def evidently_report(page: Any, stack: Stack, t: Targets) -> None:
    """Evidently's HTML report of the night's drift: the verdict, the share, the drifted columns first."""
    page.set_viewport_size({"width": WIDTH, "height": 1300})
    page.goto(t.report.as_uri(), wait_until="load")
    wait_for(page, f"Evidently drift report {t.report}", page.get_by_text("Dataset Drift is detected"),
             page.get_by_text("Detected", exact=True))


SHOTS: list[tuple[str, Callable[[Any, Stack, Targets], None]]] = [
    ("prefect-deployment.png", prefect_deployment), ("prefect-trigger.png", prefect_trigger),
    ("prefect-flow-run.png", prefect_flow_run), ("prefect-night.png", prefect_night_table),
    ("prefect-gate.png", prefect_gate), ("mlflow-aliases.png", mlflow_aliases), ("drift-report.png", evidently_report),
]


def shrink(path: Path) -> None:
    """Re-encode with Pillow when that is smaller; as a 256-colour palette if still above MAX_PNG_BYTES."""
    import io

    from PIL import Image

    def encoded(image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        return buffer.getvalue()

    with Image.open(path) as image:
        rgb = image.convert("RGB")
    best = min(path.read_bytes(), encoded(rgb), key=len)
    if len(best) > MAX_PNG_BYTES:
        best = min(best, encoded(rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)),
                   key=len)
    path.write_bytes(best)


def shoot(stack: Stack, t: Targets) -> list[Path]:
    """Every picture into the work folder's shots/; returns them."""
    shots = stack.base / "shots"
    written = []
    with browser(stack.base / "chromium-profile") as context:
        page = context.new_page()
        for name, take in SHOTS:
            page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
            take(page, stack, t)
            page.screenshot(path=str(shots / name), animations="disabled", caret="hide")
            written.append(shots / name)
    if t.week_chart is not None:
        written.append(Path(shutil.copyfile(t.week_chart, shots / "demo-week.png")))
    else:
        print("  demo-week.png: skipped, the demo wrote no reports/demo-week-*.png", flush=True)
    for path in written:
        shrink(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python docs/screenshots.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs", help="where the PNGs go (default docs/)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (state, logs) and say where")
    parser.add_argument("--reuse", type=Path, help="a folder kept by --keep: photograph it again, no new week")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    base = args.reuse.resolve() if args.reuse else Path(tempfile.mkdtemp(prefix="nightshift-shots-"))
    stack = Stack(base)
    stack.prepare()
    print(f"screenshots: working in {base}", flush=True)
    keep = bool(args.keep or args.reuse)
    try:
        stack.start_prefect()
        if not args.reuse:
            stack.run("deploy", [sys.executable, "-m", "deployments.deploy"], timeout=600)
            stack.run("demo", [sys.executable, "-m", "cli.demo"], timeout=1800)
        stack.start_worker()
        stack.start_mlflow()
        targets = find_targets(stack)
        run_through_deployment(stack, targets.deployment_id, targets.night.night)
        print(f"  night shown: {MODEL} {targets.night.night}; drift report: {targets.report}", flush=True)
        written = shoot(stack, targets)
        args.out.mkdir(parents=True, exist_ok=True)
        for path in written:  # only now: a failed run leaves docs/ as it was
            shutil.copyfile(path, args.out / path.name)
            print(f"  {args.out / path.name}: {path.stat().st_size / 1000:.0f} KB", flush=True)
    except ShotError as exc:
        keep = True
        print(f"screenshots failed: {exc}", file=sys.stderr)
        return 1
    except BaseException:
        keep = True
        raise
    finally:
        stack.stop()
        if keep:
            print(f"kept {base} (logs in {stack.logs})", flush=True)
        else:
            shutil.rmtree(base, ignore_errors=True)
    print(f"{len(written)} images in {args.out} in {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
