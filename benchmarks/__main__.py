"""`python -m benchmarks` (make bench): run the drift benchmark and print ratios and decision agreement."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.drift import DEFAULT_ROWS, QUICK_ROWS, SCENARIOS, print_results, run_benchmark, write_results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of the benchmark."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Nightly drift step (sampled Evidently) vs bare scipy and full-data Evidently; each measurement "
                    "runs in a fresh subprocess.",
    )
    parser.add_argument("--rows", type=int, nargs="+", default=list(DEFAULT_ROWS), metavar="N",
                        help="rows per side (default: %(default)s)")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS),
                        help="drift scenarios to run (default: all)")
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK_ROWS[0]:,} rows (overrides --rows)")
    parser.add_argument("--skip-full", action="store_true",
                        help="skip full-data Evidently (~2 min per scenario at 1M rows); no decision agreement then")
    parser.add_argument("--repeat", type=int, default=1, metavar="K",
                        help="run the scipy and nightshift measurements K times each, alternating, and keep the "
                             "best time (default: %(default)s)")
    parser.add_argument("--show", type=Path, metavar="JSON", help="print the tables of a saved result file and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables and verdicts, save the JSON results."""
    args = parse_args(argv)
    if args.show is not None:
        print_results(json.loads(args.show.read_text()))
        return 0
    rows = list(QUICK_ROWS) if args.quick else args.rows
    results = run_benchmark(rows, args.scenarios, skip_full=args.skip_full, repeat=args.repeat)
    print_results(results)
    path = write_results(results)
    print(f"results: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
