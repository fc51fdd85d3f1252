"""Promotion and redeploy: move the champion alias under a lock, inside a transaction that can undo it."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import Transaction, get_transaction
from pydantic import BaseModel

from nightshift.errors import NightshiftError
from tasks import tracking
from tasks.tracking import AliasState, TrackingConfig


class DeployRefused(NightshiftError):
    """The model server would not take the new champion (its smoke test failed or it is unreachable)."""


class DeployOutcome(BaseModel):
    """What the redeploy step did."""

    status: Literal["not-deployed", "deployed"]
    detail: str


@contextmanager
def promotion_lock(model_name: str, timeout_seconds: float = 600) -> Iterator[None]:
    """At most one promotion per model at a time (a Prefect global concurrency limit of 1)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectNotFound

    name = f"nightshift-promote-{model_name}"[:120]
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except Exception:  # created concurrently by another promotion: fine
                client.read_global_concurrency_limit_by_name(name)
    with concurrency(name, occupy=1, timeout_seconds=timeout_seconds, strict=True):
        yield


@task(name="move-champion-alias", cache_policy=NO_CACHE)
def move_champion_task(cfg: TrackingConfig, model_name: str, version: str) -> AliasState:
    """champion := version (previous := old champion); registers its own undo with the transaction."""
    before = tracking.move_champion(cfg, model_name, version)
    txn = get_transaction()
    if txn is not None:
        txn.set("undo", {"cfg": cfg.model_dump(), "model_name": model_name,
                         "champion": before.champion, "previous": before.previous})
    return before


@move_champion_task.on_rollback
def _restore_aliases(txn: Transaction) -> None:
    undo = txn.get("undo")
    tracking.restore_aliases(TrackingConfig(**undo["cfg"]), undo["model_name"],
                             AliasState(champion=undo["champion"], previous=undo["previous"]))


def redeploy(server_url: str | None, token: str | None, timeout_seconds: float = 120) -> DeployOutcome:
    """Ask the live model server to load the new champion; raises DeployRefused when it will not."""
    if not server_url:
        return DeployOutcome(status="not-deployed", detail="no model server configured (NIGHTSHIFT_SERVER_URL)")
    import httpx

    try:
        response = httpx.post(f"{server_url.rstrip('/')}/reload", timeout=timeout_seconds,
                              headers={"Authorization": f"Bearer {token}"} if token else {})
    except httpx.HTTPError as exc:
        raise DeployRefused(f"model server {server_url} unreachable: {exc}") from exc
    if response.status_code >= 300:
        raise DeployRefused(f"model server {server_url} refused the new model ({response.status_code}): "
                            f"{response.text[:300]}")
    return DeployOutcome(status="deployed", detail=response.text[:300])


redeploy_task = task(redeploy, name="redeploy-model-server", cache_policy=NO_CACHE)
append_audit_task = task(tracking.append_audit, name="append-audit-record", cache_policy=NO_CACHE)


# --------------------------------------------------------------------------------------------
# Batch scoring: chunked, validated against the contract, written incrementally as Parquet.
# --------------------------------------------------------------------------------------------
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

    def markdown(self) -> str:
        """Summary artifact: rows, class mix, score histogram."""
        total = max(self.rows, 1)
        lines = [f"# Batch scoring: {self.rows} rows", f"`{self.source}` → `{self.output}` ({self.chunks} chunks)", "",
                 "| class | rows | share |", "|---|---|---|",
                 *[f"| {k} | {v} | {v / total:.1%} |" for k, v in self.class_counts.items()], "",
                 f"## Score histogram (P({self.classes[-1]}))", "| bin | rows | |", "|---|---|---|"]
        peak = max(self.histogram_counts) or 1
        for lo, hi, n in zip(self.histogram_edges, self.histogram_edges[1:], self.histogram_counts):
            lines.append(f"| {lo:.1f}–{hi:.1f} | {n} | {'█' * round(20 * n / peak)} |")
        if self.warnings:
            lines += ["", "Validation warnings: " + "; ".join(self.warnings[:10])]
        return "\n".join(lines)


def default_output(source: str) -> str:
    """`<input without suffix>.predictions.parquet`, next to the input."""
    base = source.split("?", 1)[0]
    for suffix in (".parquet", ".pq", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv"):
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
            break
    return f"{base}.predictions.parquet"


def score_file(model: Any, contract: Any, source: str, output: str, chunk_rows: int = 200_000,
               keep_columns: tuple[str, ...] = ()) -> ScoreSummary:
    """Score a file chunk by chunk: validate each chunk, predict, append to a Parquet file; nothing partial is left."""
    import gc
    import resource

    import fsspec
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nightshift.errors import DataValidationError
    from tasks.data import iter_table
    from tasks.validate import validate_batch

    classes = [str(c) for c in np.asarray(model.classes_)]
    edges = np.linspace(0.0, 1.0, 11)
    hist = np.zeros(10, dtype=np.int64)
    counts = dict.fromkeys(classes, 0)
    warnings: set[str] = set()
    rows = chunks = 0
    writer = None
    tmp = f"{output}.partial"
    fs, path = fsspec.core.url_to_fs(tmp)
    try:
        for chunk in iter_table(source, chunk_rows):
            report, clean = validate_batch(chunk, contract, f"{source} (rows {rows}..{rows + len(chunk) - 1})")
            if not report.ok:
                raise DataValidationError(report.summary())
            warnings.update(f"{f.column}: {f.check}" for f in report.warnings)
            proba = model.predict_proba(clean[contract.features])
            labels = np.asarray(classes, dtype=object)[np.argmax(proba, axis=1)]
            out = {c: clean[c].to_numpy() for c in keep_columns if c in clean.columns}
            out["prediction"] = labels.astype(str)
            out.update({f"proba_{c}": proba[:, i] for i, c in enumerate(classes)})
            table = pa.table(out)
            if writer is None:
                writer = pq.ParquetWriter(fs.open(path, "wb"), table.schema)
            writer.write_table(table)
            hist += np.histogram(proba[:, -1], bins=edges)[0]
            for label, n in zip(*np.unique(labels.astype(str), return_counts=True)):
                counts[label] += int(n)
            rows += len(chunk)
            chunks += 1
            # pandas/pandera leave reference cycles per chunk; collecting them keeps peak RSS flat (measured:
            # +25 MB per 200k-row chunk without this, flat with it; make bench BENCH_ARGS="--only batch").
            del chunk, clean, proba, table
            gc.collect()
        if writer is None:
            raise DataValidationError(f"batch {source} has no rows")
        writer.close()
        writer = None
        fs.mv(path, fsspec.core.url_to_fs(output)[1])
    finally:
        if writer is not None:
            writer.close()
        if fs.exists(path):
            fs.rm(path)
    return ScoreSummary(source=source, output=output, rows=rows, chunks=chunks, classes=classes, class_counts=counts,
                        histogram_edges=edges.tolist(), histogram_counts=hist.tolist(), warnings=sorted(warnings),
                        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


score_file_task = task(score_file, name="score-file", cache_policy=NO_CACHE)
