"""`make demo-shadow`: a challenger the offline gate would promote, judged on live traffic first, and dropped.

The week of tasks/data/segments.py, told as a person would live it, each step's command and what it answered. Two
segments of customers churn for opposite reasons; the landed files stopped carrying segment b four days ago, while
the traffic the model server is asked about is 80% segment b. The example catalogue (examples/shadow/models.yaml)
holds the same model twice: `shadow-churn` with gate.shadow: required and `shadow-churn-off` with gate.shadow: off.

1. Eight days land (old world, then new); the first night trains v1 of both on the old world.
2. A real model server starts on a free loopback port and serves both champions.
3. Tonight (forced, as an operator would after the drift) v2 beats v1 on the newest labeled day's files:
   `shadow-churn-off` promotes it; `shadow-churn` loads it beside v1 on the server instead (its shadow).
4. The day's live traffic reaches `shadow-churn`: v1 answers every request, v2 scores the same rows off the request
   path; both sides are captured.
5. The next day the traffic's labels land; that night compares the two on the rows both scored, drops v2 for being
   worse live, and keeps v1.

Everything lives in the demo's own state dir (default <NIGHTSHIFT_STATE_DIR>/demo-shadow/: MLflow, Prefect's home,
landing files, captured traffic, the server's log), deleted and made afresh on every run; nothing else is touched.
The days are real UTC dates around today, because the server captures traffic under today's date.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console

    from flows.nightly import NightlyResult
    from tasks.catalogue.schema import CatalogueModel

MODEL, OFF = "shadow-churn", "shadow-churn-off"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CATALOGUE = PROJECT_ROOT / "examples" / "shadow" / "models.yaml"
MARKER = ".nightshift-demo-shadow"  # written into the demo's state dir: only such a dir is ever deleted
OLD_WORLD_UNTIL = 5  # days before today: the old world until T-5, the new one since T-4
LANDED_DAYS = 8
LIVE_B_SHARE = 0.8
CAPTURE_TIMEOUT_S = 60.0
PY = ".venv/bin/python"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cli.demo_shadow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="the demo's own state dir, deleted at start (default <NIGHTSHIFT_STATE_DIR>/demo-shadow)")
    parser.add_argument("--rows", type=int, default=2_000, help="rows per landed day (default 2000)")
    parser.add_argument("--live-rows", type=int, default=1_500, help="rows of today's live traffic (default 1500)")
    args = parser.parse_args(argv)
    if args.rows < 500 or args.live_rows < 600:
        parser.error("--rows must be at least 500 and --live-rows at least 600 (the shadow needs 500 labeled rows)")
    return args


def fresh_state_dir(path: Path) -> bool:
    """Delete the demo's previous state dir (only one this demo made: it holds MARKER) and make it afresh; True when
    there was one. ValueError naming the dir when it exists, is not empty and was not made by this demo."""
    existed = path.exists()
    if existed:
        if not path.is_dir() or (any(path.iterdir()) and not (path / MARKER).exists()):
            raise ValueError(f"{path} exists and was not made by this demo (no {MARKER} in it): give another "
                             f"--state-dir, or delete it yourself")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by `python -m cli.demo_shadow`; deleted by its next run\n")
    return existed


def demo_environment(state: Path) -> dict[str, str]:
    """Point every setting the nights, the CLIs and the server read at the demo's own state (os.environ); the values
    set. The catalogue is the example's unless NIGHTSHIFT_CATALOGUE_PATH names another; no server the user runs is
    told anything (NIGHTSHIFT_SERVER_URL is set once the demo's own server is up)."""
    env = {"NIGHTSHIFT_STATE_DIR": str(state), "NIGHTSHIFT_CAPTURE_DIR": str(state / "served"),
           "NIGHTSHIFT_MLFLOW_TRACKING_URI": f"sqlite:///{state / 'mlflow.db'}",
           "NIGHTSHIFT_MLFLOW_REGISTRY_URI": f"sqlite:///{state / 'mlflow.db'}",
           "NIGHTSHIFT_MLFLOW_ARTIFACT_LOCATION": (state / "mlartifacts").as_uri(),
           "NIGHTSHIFT_CATALOGUE_PATH": os.environ.get("NIGHTSHIFT_CATALOGUE_PATH") or str(EXAMPLE_CATALOGUE),
           "NIGHTSHIFT_SERVER_TOKEN": os.environ.get("NIGHTSHIFT_SERVER_TOKEN") or f"demo-{secrets.token_hex(16)}"}
    if "PREFECT_HOME" not in os.environ and "PREFECT_API_URL" not in os.environ:  # ephemeral, in the demo's state
        env |= {"PREFECT_HOME": str(state / "prefect"),
                "PREFECT_PROFILES_PATH": str(state / "prefect" / "profiles.toml")}
        (state / "prefect").mkdir(parents=True, exist_ok=True)
    os.environ.pop("NIGHTSHIFT_SERVER_URL", None)
    os.environ.update(env)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
    return env


@dataclass
class DemoServer:
    """The demo's model server subprocess on loopback."""

    url: str
    port: int
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(state: Path, port: int, timeout: float = 120.0) -> DemoServer:
    """`python -m serving.server` on loopback `port`, serving the catalogue's champions and capturing traffic
    into the demo's state (parts closed every second); returns once /ready answers 200, else RuntimeError with the
    log's tail."""
    import httpx

    log = state / "server.log"
    env = {**os.environ, "NIGHTSHIFT_MODEL_NAME": MODEL, "NIGHTSHIFT_CAPTURE_ROLL_SECONDS": "1",
           "NIGHTSHIFT_CAPTURE_FLUSH_SECONDS": "0.2", "NIGHTSHIFT_SERVER_PROMPTS": ""}
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "serving.server", "--host", "127.0.0.1", "--port", str(port)],
                                   env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)
    server = DemoServer(f"http://127.0.0.1:{port}", port, process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the model server exited ({process.returncode}); its log {log}:\n"
                               f"{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                return server
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"the model server was not ready in {timeout:.0f} s; its log {log}:\n{log.read_text()[-3000:]}")


def run_night(name: str, night: date, force: bool = False) -> NightlyResult:
    """One model's night in-process (Prefect ephemeral), its chatter kept off the story; RuntimeError if it fails."""
    from flows.model_night import ModelNightParams, model_night

    with contextlib.redirect_stdout(io.StringIO()):
        state = model_night(ModelNightParams(model_name=name, night=night, force_retrain=force), return_state=True)
    if not state.is_completed():
        raise RuntimeError(f"the night {night} of {name} ended {state.name}: {state.message}")
    return state.result()


def story(r: NightlyResult) -> str:
    """A night's result in one line: what it did, the offline verdict, the champion, the shadow."""
    line = f"{r.model_name}, night {r.night}: {r.action}"
    d = r.decision
    if d is not None and d.challenger is not None and d.champion is not None:
        ci = f", CI {d.ci_low:+.4f}..{d.ci_high:+.4f}" if d.ci_low is not None and d.ci_high is not None else ""
        line += (f"; offline {d.metric} v{d.challenger_version} {d.challenger:.4f} vs v{d.champion_version or '-'} "
                 f"{d.champion:.4f} ({d.difference:+.4f}{ci})")
    line += f"; champion v{r.champion_before or '-'} -> v{r.champion_after or '-'}"
    return line + (f"; shadow: {r.shadow}" if r.shadow else "")


def send_traffic(url: str, live: pd.DataFrame, seed: int = 0) -> tuple[int, dict[str, int], dict, dict]:
    """The day's live rows to `MODEL` in requests of 1-5 rows, as callers would send them; (requests, rows answered
    per model version, a single-row request's body and its reply). RuntimeError naming the reply on any non-200."""
    import httpx
    import numpy as np

    from tasks.data.segments import SEGMENT_FEATURES

    columns, rng = list(SEGMENT_FEATURES), np.random.default_rng(seed)
    answered: dict[str, int] = {}
    requests, first = 0, None
    with httpx.Client(base_url=url, timeout=30) as client:
        start = 0
        while start < len(live):
            chunk = live.iloc[start:start + int(rng.integers(1, 6))]
            body = {"dataframe_split": {"columns": columns, "data": chunk[columns].astype(object).values.tolist()}}
            reply = client.post(f"/models/{MODEL}/invocations", json=body)
            if reply.status_code != 200:
                raise RuntimeError(f"POST /models/{MODEL}/invocations answered {reply.status_code}: {reply.text[:300]}")
            version = str(reply.json().get("model_version"))
            answered[version] = answered.get(version, 0) + len(chunk)
            if first is None or (len(chunk) == 1 and len(first[0]["dataframe_split"]["data"]) > 1):
                first = (body, reply.json())  # the first single-row request: the shortest to show
            requests, start = requests + 1, start + len(chunk)
    return requests, answered, *first


def wait_for_capture(served: Path, day: date, rows: int, shadow_version: str,
                     timeout: float = CAPTURE_TIMEOUT_S) -> float:
    """Wait until the champion's and the shadow's captured rows of `day` are all in closed parts; seconds waited.
    RuntimeError saying what was missing after `timeout`."""
    from tasks.data.served import NoServedData, read_served, read_shadow

    started = time.monotonic()
    counts = (0, 0)
    while time.monotonic() - started < timeout:
        with contextlib.suppress(NoServedData):
            counts = (len(read_served(served, MODEL, day)),
                      len(read_shadow(served, MODEL, day, version=shadow_version)))
            if counts == (rows, rows):
                return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError(f"after {timeout:.0f} s the capture in {served} held {counts[0]} champion and {counts[1]} "
                       f"shadow rows of {day}, not {rows} each")


def _cli(main: Callable[[list[str]], int], argv: list[str]) -> str:
    """A CLI's printed output, run in-process (what `python -m ...` would print)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return out.getvalue().rstrip() + ("" if code == 0 else f"\n(exit code {code})")


class Teller:
    """The story's printing: a step's title, the command a person would type, what came back, and progress."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.started = time.perf_counter()

    def step(self, title: str) -> None:
        self.console.rule(f"[bold]{title}", align="left")

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def command(self, text: str) -> None:
        self.console.print(f"$ {text}", style="bold cyan", highlight=False, markup=False)

    def output(self, text: str) -> None:
        self.console.out(text, highlight=False)

    @contextlib.contextmanager
    def working(self, what: str) -> Iterator[None]:
        """A spinner while `what` runs (on a terminal), then how long it took."""
        began = time.perf_counter()
        with self.console.status(f"{what}…"):
            yield
        self.console.print(f"  ({what}: {time.perf_counter() - began:.1f} s; "
                           f"{time.perf_counter() - self.started:.0f} s so far)", style="dim", highlight=False)


def _models_json(url: str) -> str:
    import httpx

    listed = httpx.get(f"{url}/models", timeout=10).json()
    return json.dumps({"default_model": listed.get("default_model"),
                       "models": {k: v for k, v in listed.get("models", {}).items() if k in (MODEL, OFF)}}, indent=2)


def _shadow_metrics(url: str) -> str:
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return "\n".join(line for line in text.splitlines() if line.startswith("nightshift_shadow_") and MODEL in line)


def land_history(model: CatalogueModel, state: Path, today: date, rows: int) -> list[str]:
    """The eight days before today, features and labels, where the catalogue entry looks: the old world until T-5,
    then the new one with segment b nearly gone from the files. Returns one line per day, what landed."""
    from tasks.data.segments import land_segment_day, segment_day

    lines = []
    for back in range(LANDED_DAYS, 0, -1):
        day, old = today - timedelta(days=back), back >= OLD_WORLD_UNTIL
        frame = segment_day(day, rows, 0.5 if old else 0.01, new_world=not old)
        land_segment_day(frame, day, state, model.features, model.labels.source)
        lines.append(f"  {day}: {rows:,} rows + labels, {'old' if old else 'new'} world, "
                     f"{(frame['segment'] == 'b').mean():.0%} segment b")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Tell the shadow's life cycle on a fresh state dir and a real model server; an exit code (1: a step failed)."""
    args = _parse_args(argv)
    from nightshift.settings import get_settings

    state = (args.state_dir or get_settings().state_dir / "demo-shadow").resolve()
    try:
        existed = fresh_state_dir(state)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    env = demo_environment(state)
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial MLflow database tables"
    from rich.console import Console

    from tasks.catalogue.schema import load_catalogue

    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 120)
    tell = Teller(console)
    catalogue = load_catalogue(Path(env["NIGHTSHIFT_CATALOGUE_PATH"]))
    missing = [n for n in (MODEL, OFF) if n not in {m.name for m in catalogue.models}]
    if missing:
        print(f"error: the catalogue {env['NIGHTSHIFT_CATALOGUE_PATH']} has no model {', '.join(missing)} (unset "
              f"NIGHTSHIFT_CATALOGUE_PATH to use {EXAMPLE_CATALOGUE})", file=sys.stderr)
        return 2
    console.rule("[bold]nightshift shadow demo: the offline gate says promote, live traffic says no")
    tell.say(f"State: {state} ({'deleted and ' if existed else ''}made afresh: the demo's own, nothing else is "
             f"touched)\nCatalogue: {env['NIGHTSHIFT_CATALOGUE_PATH']}\nMLflow: {env['NIGHTSHIFT_MLFLOW_TRACKING_URI']}"
             f"\nPrefect: ephemeral, home {os.environ.get('PREFECT_HOME', '-')}")
    servers: list[DemoServer] = []
    try:
        _tell(tell, catalogue.get(MODEL), state, args, servers)
    except (RuntimeError, OSError) as exc:
        console.print(f"[red]The demo stopped: {exc}", highlight=False)
        return 1
    finally:
        for server in servers:
            server.stop()
    return 0


def _tell(tell: Teller, model: CatalogueModel, state: Path, args: argparse.Namespace,
          servers: list[DemoServer]) -> None:
    """The story, step by step; the server it starts goes into `servers` (main stops it, also on failure)."""
    today = datetime.now(UTC).date()  # the server captures live rows under today's UTC date
    tonight, tomorrow = today, today + timedelta(days=1)
    first_night = today - timedelta(days=OLD_WORLD_UNTIL - 1)

    tell.step("1. Eight days land; the first night trains v1 on them")
    tell.say("Two segments of customers churn for opposite reasons. Until T-5 half the landed customers are segment "
             "b;\nsince T-4 the files are 99% segment a, whose churn now also follows x3.")
    tell.output("\n".join(land_history(model, state, today, args.rows)))
    tell.command(f"{PY} -m flows.model_night {MODEL} --night {first_night}   # and {OFF}, the same night")
    with tell.working("two first nights"):  # one after the other: their identical windows race in MLflow
        firsts = [run_night(name, first_night) for name in (MODEL, OFF)]
    tell.output("\n".join(story(r) for r in firsts))

    tell.step("2. A model server serves both champions")
    from tasks.data.segments import land_segment_day, segment_day

    live = segment_day(today, args.live_rows, LIVE_B_SHARE, new_world=True)
    land_segment_day(live, today, state, model.features)  # today's rows are what the server is asked; labels: tomorrow
    port = free_port()
    tell.command(f"NIGHTSHIFT_CAPTURE_ROLL_SECONDS=1 {PY} -m serving.server --port {port} &   # log: server.log")
    with tell.working("server start"):
        server = start_server(state, port)
    servers.append(server)
    os.environ["NIGHTSHIFT_SERVER_URL"] = server.url  # the nights load shadows and swap champions here
    tell.say(f"Serving at {server.url}; the nights are told so (NIGHTSHIFT_SERVER_URL=http://127.0.0.1:{port}).")
    _tonight_and_after(tell, model, state, server, live, tonight, tomorrow)


def _tonight_and_after(tell: Teller, model: CatalogueModel, state: Path, server: DemoServer, live: pd.DataFrame,
                       tonight: date, tomorrow: date) -> None:
    """Steps 3-6: tonight's forced retrain, the day's traffic, the labels and the next night's live verdict."""
    from cli.audit import main as audit
    from cli.shadow import main as shadow_cli
    from tasks.data.segments import land_segment_day, segment_day

    tell.step(f"3. Tonight ({tonight}): v2 is trained on the new files, and beats v1 on them")
    tell.say("After the drift an operator forces a retrain of both. The same offline gate, two settings of "
             "gate.shadow:")
    results = {}
    for name, setting in ((OFF, "off"), (MODEL, "required")):
        tell.command(f"{PY} -m flows.model_night {name} --night {tonight} --force   # gate.shadow: {setting}")
        with tell.working(f"{name}'s night"):
            results[name] = run_night(name, tonight, force=True)
        tell.output(story(results[name]))
    tell.command(f"curl -s {server.url}/models")
    tell.output(_models_json(server.url))
    shadowing = results[MODEL]
    if shadowing.action != "shadowing":
        raise RuntimeError(f"{MODEL} did not put v{shadowing.challenger_version} in shadow: {story(shadowing)}")

    tell.step(f"4. The day's live traffic: {len(live):,} rows, {LIVE_B_SHARE:.0%} segment b")
    tell.say(f"Callers ask {MODEL} about the day's customers, 1-5 rows a request:")
    with tell.working("traffic"):
        requests, answered, body, reply = send_traffic(server.url, live)
    tell.command(f"curl -s {server.url}/models/{MODEL}/invocations -H 'Content-Type: application/json' "
                 f"-d '{json.dumps(body)}'   # one of {requests:,} requests")
    tell.output(json.dumps(reply))
    tell.say(f"{sum(answered.values()):,} rows in {requests:,} requests, answered by: "
             + ", ".join(f"v{v} {n:,} rows" for v, n in sorted(answered.items()))
             + f". v{shadowing.challenger_version} scored the same rows off the request path, never answering.")
    with tell.working("capture parts closed (champion and shadow)"):
        wait_for_capture(state / "served", tonight, len(live), shadowing.challenger_version or "")
    tell.command(f"curl -s {server.url}/metrics | grep '^nightshift_shadow_.*{MODEL}'")
    tell.output(_shadow_metrics(server.url))

    tell.step(f"5. Tomorrow ({tomorrow}): the traffic's labels land; the night judges v2 on the live rows")
    land_segment_day(live, tonight, state, model.features, model.labels.source)
    land_segment_day(segment_day(tomorrow, len(live), 0.01, new_world=True), tomorrow, state, model.features)
    tell.say(f"  {tonight}: labels of the {len(live):,} served customers;  {tomorrow}: the day's rows (labels "
             f"tomorrow)")
    tell.command(f"{PY} -m flows.model_night {MODEL} --night {tomorrow}")
    with tell.working(f"{MODEL}'s night"):
        judged = run_night(MODEL, tomorrow)
    tell.output(story(judged))
    tell.command(f"{PY} -m cli.shadow status {MODEL}")
    tell.output(_cli(shadow_cli, ["status", MODEL]))
    tell.command(f"curl -s {server.url}/models")
    tell.output(_models_json(server.url))
    tell.command(f"{PY} -m cli.audit --model-name {MODEL}")
    tell.output(_cli(audit, ["--model-name", MODEL]))

    tell.step("6. What happened")
    tell.say(closing(results[OFF], shadowing, judged))
    tell.say(f"Wall time: {time.perf_counter() - tell.started:.0f} s. Look around: NIGHTSHIFT_STATE_DIR={state} "
             f"{PY} -m cli.audit")


def closing(promoted: NightlyResult, shadowing: NightlyResult, judged: NightlyResult) -> str:
    """The closing sentence: offline vs live, and what each setting of gate.shadow did with it."""
    from nightshift.settings import get_settings
    from tasks.monitoring.shadow import LiveComparison
    from tasks.registry.quality import quality_run
    from tasks.registry.shadow import SHADOW_NIGHT_TAG
    from tasks.registry.store import TrackingConfig

    d, v2 = shadowing.decision, shadowing.challenger_version
    records = quality_run(TrackingConfig.from_settings(get_settings()), MODEL, SHADOW_NIGHT_TAG)[1]
    live = LiveComparison.model_validate_json(records[max(records)]) if records else None
    offline = (f"Offline, on the newest labeled day's files, v{v2} was {d.difference:+.3f} {d.metric} better than "
               f"v{d.champion_version}" if d and d.difference is not None else f"Offline, the gate passed v{v2}")
    if live is not None and live.difference is not None:
        said = "worse" if live.difference < 0 else "better"
        online = (f"live, on the {live.rows:,} labeled rows the server answered ({LIVE_B_SHARE:.0%} segment b), "
                  f"v{v2} was {abs(live.difference):.3f} {said} (CI {live.ci_low:+.3f}..{live.ci_high:+.3f})")
    else:
        online = f"live, no comparison was recorded ({judged.shadow or 'no shadow verdict'})"
    return (f"{offline}; {online}.\n{OFF} (gate.shadow: off) promoted v{promoted.champion_after} that night and "
            f"serves it; {MODEL} (gate.shadow: required) shadowed it, "
            + ("dropped it, and kept v" if (judged.shadow or "").startswith("dropped") else "and now has champion v")
            + f"{judged.champion_after}.")


if __name__ == "__main__":
    sys.exit(main())
