"""Batch scoring memory: peak RSS of chunked scoring at a small and a large file, each in a fresh process.

Flat memory means the large file's peak RSS is about the small one's (ratio near 1.0) although it has 10-20x the
rows. The baseline is the small file in the same run; the model is a demo forest fitted in each child.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SIZES = (500_000, 10_000_000)
QUICK_SIZES = (200_000, 2_000_000)
TARGET_RATIO = 1.25  # peak RSS of the large file vs the small one
CHUNK_ROWS = 200_000


def write_file(path: Path, rows: int) -> float:
    """Write `rows` demo rows (day 2) as Parquet block by block; seconds taken."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.data.demo import iter_demo

    start = time.perf_counter()
    writer = None
    for block in iter_demo(rows, seed=7, day=2):
        table = pa.Table.from_pandas(block, preserve_index=False)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()
    return time.perf_counter() - start


def child(path: str, chunk_rows: int) -> dict[str, Any]:
    """Fit a small demo model, score `path` with score_file; peak RSS before and after scoring."""
    import resource

    from tasks.data.contract import infer_contract
    from tasks.data.datasets import infer_features
    from tasks.data.demo import generate_demo
    from tasks.model.score import score_file
    from tasks.model.train import fit_pipeline

    frame = generate_demo(20_000, seed=1)
    spec = infer_features(frame, "churned", exclude=("event_date",))
    model = fit_pipeline(frame, spec, "random_forest", {"n_estimators": 50, "max_depth": 10}, seed=1)
    contract = infer_contract(frame, spec)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    summary = score_file(model, contract, path, f"{path}.predictions.parquet", chunk_rows, ())
    seconds = time.perf_counter() - start
    return {"rows": summary.rows, "chunks": summary.chunks, "seconds": seconds, "rss_before_mb": before,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_benchmark(sizes: tuple[int, ...], work_dir: Path, log: Any = print) -> dict[str, Any]:
    """Each size: write the file, score it in a fresh process; ratios against the smallest size."""
    runs = []
    for rows in sizes:
        path = work_dir / f"batch-{rows}.parquet"
        written = write_file(path, rows) if not path.exists() else 0.0
        log(f"[batch] {rows:,} rows written in {written:.0f} s ({path.stat().st_size / 1e6:.0f} MB); scoring ...")
        out = subprocess.run([sys.executable, "-m", "benchmarks.batch", "--child", str(path), str(CHUNK_ROWS)],
                             capture_output=True, text=True, timeout=3 * 3600)
        if out.returncode != 0:
            raise RuntimeError(f"batch scoring child failed: {out.stderr[-3000:]}")
        run = json.loads(out.stdout.strip().splitlines()[-1])
        log(f"[batch] {rows:,} rows: {run['seconds']:.0f} s, {run['chunks']} chunks, peak RSS {run['peak_rss_mb']:.0f} MB")
        runs.append(run)
        for produced in (path, Path(f"{path}.predictions.parquet")):
            produced.unlink(missing_ok=True)
    base = runs[0]
    for run in runs:
        run["rss_ratio"] = run["peak_rss_mb"] / base["peak_rss_mb"]
        run["rows_per_s"] = run["rows"] / run["seconds"]
    return {"benchmark": "batch", "chunk_rows": CHUNK_ROWS, "runs": runs, "target_ratio": TARGET_RATIO}


def print_results(results: dict[str, Any]) -> None:
    """A table of sizes with peak RSS and its ratio to the smallest, then the verdict."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Batch scoring (score_file, {results['chunk_rows']:,}-row chunks, demo forest 50 trees)",
                  title_justify="left")
    for name in ("rows", "chunks", "seconds", "rows/s", "peak RSS MB", "RSS vs smallest"):
        table.add_column(name, justify="right")
    for run in results["runs"]:
        table.add_row(f"{run['rows']:,}", str(run["chunks"]), f"{run['seconds']:.0f}", f"{run['rows_per_s']:,.0f}",
                      f"{run['peak_rss_mb']:.0f}", f"{run['rss_ratio']:.2f}x")
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    big = results["runs"][-1]
    status = "PASS" if big["rss_ratio"] <= results["target_ratio"] else "FAIL"
    print(f"{status} flat memory: {big['rows']:,} rows peak {big['peak_rss_mb']:.0f} MB = {big['rss_ratio']:.2f}x the "
          f"{results['runs'][0]['rows']:,}-row run, target <= {results['target_ratio']}x")


if __name__ == "__main__" and "--child" in sys.argv:
    print(json.dumps(child(sys.argv[2], int(sys.argv[3]))))
