"""`python -m benchmarks` (make bench): the drift, serving, capture, batch, fleet, night, hpsearch, alarms, bands,
stack and shadow benchmarks; ratios and verdicts."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks import batch, capture, fleet, night, serving
from benchmarks.drift import (
    DEFAULT_ROWS,
    QUICK_ROWS,
    SCENARIOS,
    print_results,
    run_benchmark,
    write_results,
)

CAPTURE_REPEAT = 5  # capture's ratios are medians of per-run pairs: one pair is too noisy on a shared 2-core box
BENCHMARKS = ("drift", "serving", "capture", "batch", "fleet", "night", "hpsearch", "alarms", "bands", "stack",
              "shadow")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of the benchmarks."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="drift: nightly drift step (sampled Evidently) vs bare scipy and full-data Evidently. serving: "
                    "our model server vs `mlflow models serve` on the same model (latency, requests/s). capture: "
                    "our server capturing every request vs capture off (latency, requests/s). batch: peak "
                    "RSS of chunked scoring. fleet: N small models' nights one after another vs the fleet flow "
                    "(wall time, CPU floor, flow runs a night, peak RSS), on this checkout and a base commit. alarms: "
                    "the drift decision's false alarms on undrifted nights and detection "
                    "on drifted days, before/after. bands: how often the label-free estimate's 95%% band holds the "
                    "realized metric over simulated nights, before/after. stack: the fleet through deployments on "
                    "`make stack` (PostgreSQL, servers with auth, 4 workers): wall, CPU floor, peak memory per part. "
                    "shadow: one model server's latency and requests/s with a shadow model loaded vs without. "
                    "Each measurement runs in a fresh "
                    "subprocess.",
    )
    parser.add_argument("--only", choices=BENCHMARKS, help="run just this benchmark (default: all)")
    parser.add_argument("--rows", type=int, nargs="+", default=list(DEFAULT_ROWS), metavar="N",
                        help="drift: rows per side (default: %(default)s)")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS),
                        help="drift: scenarios to run (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help=f"drift: only {QUICK_ROWS[0]:,} rows (overrides --rows); serving: only the "
                             f"{serving.TARGET_MODEL} model (overrides --models); capture: only the "
                             f"{capture.TARGET_MODEL} model; batch: {batch.QUICK_SIZES}; fleet: "
                             f"{fleet.QUICK_MODELS} models of {fleet.QUICK_ROWS:,} rows, {fleet.QUICK_CONCURRENCY} "
                             "at once")
    parser.add_argument("--skip-full", action="store_true",
                        help="drift: skip full-data Evidently (~2 min per scenario at 1M rows); no decision "
                             "agreement then")
    parser.add_argument("--repeat", type=int, default=None, metavar="K",
                        help="drift: run scipy and nightshift K times each, alternating, best time kept; serving: "
                             "measure each server K times (fresh start, alternating order), medians reported; "
                             f"capture: each mode K times, off and on alternating (default: 1; capture: "
                             f"{CAPTURE_REPEAT})")
    parser.add_argument("--models", nargs="+", choices=list(serving.MODELS), default=list(serving.MODELS),
                        help="serving, capture: models to train and serve (default: all)")
    parser.add_argument("--requests", type=int, default=None, metavar="N",
                        help="serving, capture, shadow: sequential one-row requests on one connection (default: "
                             f"{serving.SINGLE_REQUESTS}; shadow 3000 per phase)")
    parser.add_argument("--connections", type=int, default=serving.CONCURRENCY, metavar="C",
                        help="serving, capture: concurrent connections of the throughput phase (default: %(default)s)")
    parser.add_argument("--concurrent-requests", type=int, default=serving.CONCURRENT_REQUESTS, metavar="N",
                        help="serving, capture: request budget of the throughput phase (default: %(default)s)")
    parser.add_argument("--concurrent-seconds", type=float, default=serving.CONCURRENT_SECONDS, metavar="S",
                        help="serving, capture: time limit of the throughput phase (default: %(default)s)")
    parser.add_argument("--state-dir", type=Path, metavar="DIR",
                        help="serving, capture: keep the trained models here and reuse them on the next run "
                             "(default: a temporary directory, deleted afterwards)")
    parser.add_argument("--batch-rows", type=int, nargs=2, default=list(batch.SIZES), metavar=("SMALL", "LARGE"),
                        help="batch: rows of the baseline and the large file (default: %(default)s; --quick: "
                             f"{batch.QUICK_SIZES})")
    parser.add_argument("--fleet-models", type=int, default=fleet.MODELS, metavar="N",
                        help="fleet: models in the catalogue, each running one night (default: %(default)s)")
    parser.add_argument("--fleet-concurrency", type=int, nargs="+", default=list(fleet.CONCURRENCY), metavar="C",
                        help="fleet: models at once, one fleet run per value (default: %(default)s)")
    parser.add_argument("--fleet-rows", type=int, default=fleet.ROWS, metavar="N",
                        help="fleet: rows per model per night (default: %(default)s)")
    parser.add_argument("--fleet-baseline-ref", default=fleet.BASELINE_REF, metavar="REF",
                        help="fleet: the git commit measured as 'before' (a temporary worktree, removed afterwards) "
                             "right before each 'after' run of this checkout; 'none' skips it (default: %(default)s)")
    parser.add_argument("--fleet-skip-sequential", action="store_true",
                        help="fleet: only the fleet runs, not the one-after-another baseline")
    parser.add_argument("--night-rows", type=int, nargs="+", default=list(night.ROWS), metavar="N",
                        help="night: rows per night, one flow-vs-script pair per value (default: %(default)s; "
                             f"--quick: {night.QUICK_ROWS} with the {night.QUICK_ESTIMATOR!r} estimator)")
    parser.add_argument("--night-estimator", choices=list(night.ESTIMATORS), default="default",
                        help="night: the challenger's estimator and grid (default: the nightly flow's)")
    parser.add_argument("--show", type=Path, metavar="JSON", help="print the tables of a saved result file and exit")
    parser.add_argument("--hpsearch-rows", type=int, default=None, metavar="N",
                        help="hpsearch: demo rows generated, 70 %% of them cross-validated (default: 50000; --quick: "
                             "10000)")
    parser.add_argument("--hpsearch-ways", nargs="+", default=None, metavar="WAY",
                        choices=["sequential", "threads", "dask", "dask-api", "sklearn"],
                        help="hpsearch: ways to measure (default: all; sequential is the speed-up's baseline)")
    parser.add_argument("--alarm-nights", type=int, nargs=2, default=None, metavar=("SMALL", "LARGE"),
                        help="alarms: undrifted nights per world and reference size, up to 1000 rows and above "
                             "(default: 100 40; --quick: 6 6)")
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be positive")
    if args.requests is not None and args.requests < 1 or args.connections < 1 or args.concurrent_requests < 1 \
            or args.concurrent_seconds <= 0 or args.fleet_models < 1 or min(args.fleet_concurrency) < 1:
        parser.error("--repeat, --requests, --connections, --concurrent-requests, --concurrent-seconds, "
                     "--fleet-models and --fleet-concurrency must be positive")
    if args.fleet_rows < 500:
        parser.error("--fleet-rows must be at least 500 (fewer and a night's gate has too few labeled rows)")
    return args


def _print_stack(results: dict) -> None:
    from benchmarks import stack

    stack.print_results(results)


def _print_shadow(results: dict) -> None:
    from benchmarks import shadow

    shadow.print_results(results)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print the tables and verdicts, save the JSON results."""
    args = parse_args(argv)
    if args.show is not None:
        saved = json.loads(args.show.read_text())
        if saved.get("benchmark") == "hpsearch":
            from benchmarks import hpsearch

            hpsearch.print_results(saved)
            return 0
        if saved.get("benchmark") == "alarms":
            from benchmarks import alarms

            alarms.print_results(saved)
            return 0
        if saved.get("benchmark") == "bands":
            from benchmarks import bands

            bands.print_results(saved)
            return 0
        show = {"serving": serving.print_results, "capture": capture.print_results, "batch": batch.print_results,
                "fleet": fleet.print_results, "night": night.print_results,
                "stack": _print_stack, "shadow": _print_shadow}.get(saved.get("benchmark"), print_results)
        show(saved)
        return 0
    if args.only in (None, "drift"):
        rows = list(QUICK_ROWS) if args.quick else args.rows
        results = run_benchmark(rows, args.scenarios, skip_full=args.skip_full, repeat=args.repeat or 1)
        print_results(results)
        print(f"results: {write_results(results)}", file=sys.stderr)
    if args.only in (None, "serving"):
        if args.only is None:
            print()
        models = [serving.TARGET_MODEL] if args.quick else args.models
        results = serving.run_benchmark(
            models, state_dir=args.state_dir, repeat=args.repeat or 1,
            requests=args.requests or serving.SINGLE_REQUESTS,
            connections=args.connections, concurrent_requests=args.concurrent_requests,
            concurrent_seconds=args.concurrent_seconds)
        serving.print_results(results)
        print(f"results: {serving.write_results(results)}", file=sys.stderr)
    if args.only in (None, "capture"):
        if args.only is None:
            print()
        models = [capture.TARGET_MODEL] if args.quick else args.models
        results = capture.run_benchmark(
            models, state_dir=args.state_dir, repeat=args.repeat or CAPTURE_REPEAT,
            requests=args.requests or serving.SINGLE_REQUESTS,
            connections=args.connections, concurrent_requests=args.concurrent_requests,
            concurrent_seconds=args.concurrent_seconds)
        capture.print_results(results)
        print(f"results: {capture.write_results(results)}", file=sys.stderr)
    if args.only in (None, "batch"):
        import tempfile

        from benchmarks import save_results

        sizes = batch.QUICK_SIZES if args.quick else tuple(args.batch_rows)
        with tempfile.TemporaryDirectory(prefix="nightshift-batch-") as tmp:
            results = batch.run_benchmark(sizes, Path(tmp), log=lambda msg: print(msg, file=sys.stderr))
        batch.print_results(results)
        print(f"results: {save_results('batch', results)}", file=sys.stderr)
    if args.only in (None, "hpsearch"):
        import tempfile

        from benchmarks import hpsearch, save_results

        hp_rows = args.hpsearch_rows or (hpsearch.QUICK_ROWS if args.quick else hpsearch.ROWS)
        hp_ways = tuple(w for w in hpsearch.WAYS if w in (args.hpsearch_ways or hpsearch.WAYS))
        with tempfile.TemporaryDirectory(prefix="nightshift-hpsearch-") as tmp:
            results = hpsearch.run_benchmark(hp_rows, args.repeat or (1 if args.quick else 2), Path(tmp), hp_ways,
                                             log=lambda msg: print(msg, file=sys.stderr, flush=True))
        saved_to = save_results("hpsearch", results)  # saved before the tables: a printing error loses nothing
        hpsearch.print_results(results)
        print(f"results: {saved_to}", file=sys.stderr)
        if any(v["status"] == "FAIL" and "identical" in v["target"] for v in results["verdicts"]):
            return 1
    if args.only in (None, "fleet"):
        import tempfile

        from benchmarks import save_results

        count, rows = (fleet.QUICK_MODELS, fleet.QUICK_ROWS) if args.quick else (args.fleet_models, args.fleet_rows)
        workers = fleet.QUICK_CONCURRENCY if args.quick else tuple(args.fleet_concurrency)
        with tempfile.TemporaryDirectory(prefix="nightshift-fleet-") as tmp:
            baseline = None if args.fleet_baseline_ref.lower() == "none" else args.fleet_baseline_ref
            results = fleet.run_benchmark(count, workers, rows, Path(tmp),
                                          log=lambda msg: print(msg, file=sys.stderr, flush=True),
                                          baseline_ref=baseline, sequential=not args.fleet_skip_sequential)
        fleet.print_results(results)
        print(f"results: {save_results('fleet', results)}", file=sys.stderr)
        if results["failed"]:
            return 1
    if args.only in (None, "night"):
        import tempfile

        from benchmarks import save_results

        rows = list(night.QUICK_ROWS) if args.quick else args.night_rows
        estimator = night.QUICK_ESTIMATOR if args.quick else args.night_estimator
        with tempfile.TemporaryDirectory(prefix="nightshift-night-") as tmp:
            results = night.run_benchmark(rows, estimator, Path(tmp),
                                          log=lambda msg: print(msg, file=sys.stderr, flush=True))
        print(f"results: {save_results('night', results)}", file=sys.stderr)
        night.print_results(results)
        if results["failed"]:
            return 1
    if args.only in (None, "alarms"):
        from benchmarks import alarms, save_results

        small, large = args.alarm_nights or ((alarms.QUICK_NIGHTS,) * 2 if args.quick else (alarms.SMALL_NIGHTS,
                                                                                           alarms.NIGHTS))
        results = alarms.run_benchmark(nights=large, small_nights=small,
                                       detect_nights=alarms.QUICK_DETECT_NIGHTS if args.quick else alarms.DETECT_NIGHTS)
        print(f"results: {save_results('alarms', results)}", file=sys.stderr)
        alarms.print_results(results)
        if any(v["status"] == "FAIL" for v in results["verdicts"]):
            return 1
    if args.only in (None, "bands"):
        from benchmarks import bands, save_results

        results = bands.run_benchmark(*((bands.QUICK_REFERENCES, bands.QUICK_NIGHTS) if args.quick else ()),
                                      log=lambda msg: print(msg, file=sys.stderr, flush=True))
        print(f"results: {save_results('bands', results)}", file=sys.stderr)
        bands.print_results(results)
    if args.only in (None, "shadow"):
        from benchmarks import shadow

        results = shadow.run_benchmark(requests=args.requests or shadow.SINGLE_REQUESTS, connections=args.connections,
                                       log=lambda msg: print(msg, file=sys.stderr, flush=True))
        print(f"results: {shadow.write_results(results)}", file=sys.stderr)
        shadow.print_results(results)
        if any(v["status"] == "FAIL" and v["kind"] == "target" for v in results["verdicts"]):
            return 1
    if args.only in (None, "stack"):
        from benchmarks import save_results, stack

        count = stack.QUICK_MODELS if args.quick else args.fleet_models
        results = stack.run_benchmark(count, args.fleet_rows, stack.WORKERS,
                                      log=lambda msg: print(msg, file=sys.stderr, flush=True))
        print(f"results: {save_results('stack', results)}", file=sys.stderr)
        stack.print_results(results)
        if not stack.passed(results):
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
