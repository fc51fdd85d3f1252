"""Batch scoring: chunked, validated against the contract, written incrementally as Parquet (or in parallel parts)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel


class ScoreSummary(BaseModel):
    """What a batch scoring run produced."""

    source: str
    output: str
    rows: int
    chunks: int
    classes: list[str]
    class_counts: dict[str, int]
    histogram_edges: list[float]
    histogram_counts: list[int]
    warnings: list[str]
    peak_rss_mb: float

    def describe(self) -> str:
        """One paragraph: rows, input and output, chunks, validation warnings."""
        warned = f" Validation warnings: {'; '.join(self.warnings[:10])}." if self.warnings else ""
        return f"{self.rows} rows of `{self.source}` → `{self.output}` in {self.chunks} chunks.{warned}"

    def class_table(self) -> list[dict[str, Any]]:
        """Predicted class mix, one row per class (a table artifact); empty for a regressor."""
        total = max(self.rows, 1)
        return [{"class": k, "rows": v, "share": f"{v / total:.1%}"} for k, v in self.class_counts.items()]

    def histogram_table(self) -> list[dict[str, Any]]:
        """Histogram of the last class's probability in tenths (a regressor: of the predicted number, ten bins over
        the first chunk's range, the outer bins open-ended), with a text bar per bin (a table artifact)."""
        peak = max(self.histogram_counts, default=0) or 1
        fmt = "{:.1f}" if self.classes else "{:.4g}"
        return [{"bin": f"{fmt.format(lo)}–{fmt.format(hi)}", "rows": n, "bar": "█" * round(20 * n / peak)}
                for lo, hi, n in zip(self.histogram_edges, self.histogram_edges[1:], self.histogram_counts)]


def default_output(source: str) -> str:
    """`<input without suffix>.predictions.parquet`, next to the input."""
    from tasks.data.datasets import READABLE_SUFFIXES

    base = source.split("?", 1)[0]
    for suffix in sorted(READABLE_SUFFIXES, key=len, reverse=True):
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
            break
    return f"{base}.predictions.parquet"


class _ChunkScorer:
    """Validates, scores and tallies chunks, appending their predictions to one Parquet file (closed by close())."""

    def __init__(self, model: Any, contract: Any, source: str, path: str, keep_columns: tuple[str, ...]) -> None:
        import fsspec
        import numpy as np

        from tasks.model.metrics import model_classes

        self.model, self.contract, self.source, self.keep_columns = model, contract, source, keep_columns
        classes = model_classes(model)
        self.regression = classes is None
        self.classes = [] if classes is None else [str(c) for c in classes]
        self.edges = np.linspace(0.0, 1.0, 11)
        self.hist = np.zeros(10, dtype=np.int64)
        self.counts = dict.fromkeys(self.classes, 0)
        self.warnings: set[str] = set()
        self.rows = self.chunks = 0
        self.fs, self.path = fsspec.core.url_to_fs(path)
        self.handle: Any = None
        self.writer: Any = None

    def add(self, chunk: Any, first_row: int) -> None:
        """Validate one chunk (rows first_row.. of the source), predict, write, tally."""
        import gc

        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        from nightshift.errors import DataValidationError
        from tasks.data.validate import validate_batch

        report, clean = validate_batch(chunk, self.contract,
                                       f"{self.source} (rows {first_row}..{first_row + len(chunk) - 1})", check_label=False)
        if not report.ok:
            raise DataValidationError(report.summary())
        self.warnings.update(f"{f.column}: {f.check}" for f in report.warnings)
        from tasks.model.metrics import predict_scores

        proba = predict_scores(self.model, clean[self.contract.features])
        out = {c: clean[c].to_numpy() for c in self.keep_columns if c in clean.columns}
        if self.regression:
            if self.chunks == 0:  # bins over the first chunk's predictions
                lo, hi = float(np.nanmin(proba)), float(np.nanmax(proba))
                self.edges = np.linspace(lo, hi if hi > lo else lo + 1.0, 11)
            out["prediction"] = proba
            shown = np.clip(proba, self.edges[0], self.edges[-1])
        else:
            labels = np.asarray(self.classes, dtype=object)[np.argmax(proba, axis=1)]
            out["prediction"] = labels.astype(str)
            out.update({f"proba_{c}": proba[:, i] for i, c in enumerate(self.classes)})
            shown = proba[:, -1]
        table = pa.table(out)
        if self.writer is None:
            self.fs.makedirs(self.fs._parent(self.path), exist_ok=True)
            self.handle = self.fs.open(self.path, "wb")
            self.writer = pq.ParquetWriter(self.handle, table.schema)
        self.writer.write_table(table)
        self.hist += np.histogram(shown, bins=self.edges)[0]
        if not self.regression:
            for label, n in zip(*np.unique(labels.astype(str), return_counts=True)):
                self.counts[label] += int(n)
        self.rows += len(chunk)
        self.chunks += 1
        # pandas/pandera leave reference cycles per chunk; collecting them keeps peak RSS flat (measured:
        # +25 MB per 200k-row chunk without this, flat with it; make bench BENCH_ARGS="--only batch").
        del chunk, clean, proba, table
        gc.collect()

    def close(self) -> None:
        """Finish the Parquet file (safe to call twice)."""
        if self.writer is not None:
            self.writer.close()
            self.handle.close()
            self.writer = self.handle = None

    def summary(self, output: str) -> ScoreSummary:
        import resource

        return ScoreSummary(source=self.source, output=output, rows=self.rows, chunks=self.chunks,
                            classes=self.classes, class_counts=self.counts, histogram_edges=self.edges.tolist(),
                            histogram_counts=self.hist.tolist(), warnings=sorted(self.warnings),
                            peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _publish(tmp: str, output: str) -> None:
    """Move the finished temporary file onto the output path."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(tmp)
    fs.mv(path, fsspec.core.url_to_fs(output)[1])


def remove_path(path: str) -> None:
    """Delete a file or directory (local or fsspec URL) if it exists."""
    import fsspec

    fs, local = fsspec.core.url_to_fs(path)
    if fs.exists(local):
        fs.rm(local, recursive=True)


def score_file(model: Any, contract: Any, source: str, output: str, chunk_rows: int = 200_000,
               keep_columns: tuple[str, ...] = ()) -> ScoreSummary:
    """Score a file chunk by chunk: validate each chunk, predict, append to a Parquet file; nothing partial is left."""
    from nightshift.errors import DataValidationError
    from tasks.data.datasets import iter_table

    tmp = f"{output}.partial"
    scorer = _ChunkScorer(model, contract, source, tmp, keep_columns)
    try:
        for chunk in iter_table(source, chunk_rows):
            scorer.add(chunk, scorer.rows)
        if scorer.chunks == 0:
            raise DataValidationError(f"batch {source} has no rows")
        scorer.close()
        _publish(tmp, output)
    finally:
        scorer.close()
        remove_path(tmp)
    return scorer.summary(output)


class Part(BaseModel):
    """A slice of a Parquet file's row groups, scored by one task (on Dask: one worker process)."""

    index: int
    row_groups: list[int]
    first_row: int


def plan_parts(source: str, chunk_rows: int) -> list[Part]:
    """Consecutive row groups of a Parquet file grouped into parts of about `chunk_rows` rows (CSV: no parts)."""
    import fsspec
    import pyarrow.parquet as pq

    from tasks.data.datasets import read_errors, table_format

    if table_format(source) != "parquet":
        return []
    with read_errors(source), fsspec.open(source, "rb") as fh:
        meta = pq.ParquetFile(fh).metadata
    parts: list[Part] = []
    groups: list[int] = []
    first = rows = 0
    for i in range(meta.num_row_groups):
        groups.append(i)
        rows += meta.row_group(i).num_rows
        if rows - first >= chunk_rows or i == meta.num_row_groups - 1:
            parts.append(Part(index=len(parts), row_groups=groups, first_row=first))
            groups, first = [], rows
    return parts


def score_part(model: Any, contract: Any, source: str, part: Part, parts_dir: str, chunk_rows: int,
               keep_columns: tuple[str, ...] = ()) -> ScoreSummary:
    """Score one part of a Parquet file into `parts_dir/part-<index>.parquet` (a task of the parallel path)."""
    from tasks.data.datasets import iter_parquet_batches

    path = f"{parts_dir.rstrip('/')}/part-{part.index:06d}.parquet"
    scorer = _ChunkScorer(model, contract, source, path, keep_columns)
    try:
        for batch in iter_parquet_batches(source, chunk_rows, part.row_groups):
            scorer.add(batch.to_pandas(), part.first_row + scorer.rows)
    finally:
        scorer.close()
    return scorer.summary(path)


def combine_parts(parts: list[ScoreSummary], source: str, output: str) -> ScoreSummary:
    """Concatenate the parts' Parquet files in order onto `output` (streamed) and add up their summaries."""
    import fsspec
    import numpy as np
    import pyarrow.parquet as pq

    from nightshift.errors import DataValidationError
    from tasks.data.datasets import iter_parquet_batches

    if not parts or sum(p.rows for p in parts) == 0:
        raise DataValidationError(f"batch {source} has no rows")
    tmp = f"{output}.partial"
    fs, path = fsspec.core.url_to_fs(tmp)
    try:
        with fs.open(path, "wb") as handle:
            writer = None
            for part in parts:
                for batch in iter_parquet_batches(part.output):
                    writer = writer or pq.ParquetWriter(handle, batch.schema)
                    writer.write_batch(batch)
            if writer is not None:
                writer.close()
        _publish(tmp, output)
    finally:
        remove_path(tmp)
    first = parts[0]
    edges, counts = first.histogram_edges, np.sum([p.histogram_counts for p in parts], axis=0).tolist()
    if not first.classes:  # a regressor: each part binned its own range; bin the combined predictions again
        edges, counts = _prediction_histogram(output)
    return first.model_copy(update={
        "output": output, "rows": sum(p.rows for p in parts), "chunks": sum(p.chunks for p in parts),
        "class_counts": {c: sum(p.class_counts[c] for p in parts) for c in first.classes},
        "histogram_edges": edges, "histogram_counts": counts,
        "warnings": sorted({w for p in parts for w in p.warnings}),
        "peak_rss_mb": max(p.peak_rss_mb for p in parts)})


def _prediction_histogram(output: str) -> tuple[list[float], list[int]]:
    """Ten bins over the range of a scored file's numeric `prediction` column (two streamed passes)."""
    import numpy as np

    from tasks.data.datasets import iter_parquet_batches

    lo, hi = np.inf, -np.inf
    for batch in iter_parquet_batches(output):
        values = batch.column("prediction").to_numpy(zero_copy_only=False)
        lo, hi = min(lo, float(np.nanmin(values))), max(hi, float(np.nanmax(values)))
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, 11)
    counts = np.zeros(10, dtype=np.int64)
    for batch in iter_parquet_batches(output):
        counts += np.histogram(batch.column("prediction").to_numpy(zero_copy_only=False), bins=edges)[0]
    return edges.tolist(), counts.tolist()


def predict_proba(model: Any, frame: Any, features: list[str]) -> Any:
    """Class probabilities of a fitted pipeline for a frame's feature columns (in the model's class order); a
    regressor's predicted numbers."""
    from tasks.model.metrics import predict_scores

    return predict_scores(model, frame[features])


predict_proba_task = task(predict_proba, name="predict-proba", cache_policy=NO_CACHE)
score_file_task = task(score_file, name="score-file", cache_policy=NO_CACHE)
score_part_task = task(score_part, name="score-part", cache_policy=NO_CACHE)
combine_parts_task = task(combine_parts, name="combine-parts", cache_policy=NO_CACHE)
