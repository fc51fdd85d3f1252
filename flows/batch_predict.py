"""Batch scoring flow: the champion scores a file/URL chunk by chunk, predictions land next to it as Parquet."""

from __future__ import annotations

import argparse
import sys

from prefect import flow, unmapped
from prefect.artifacts import create_table_artifact
from prefect.futures import wait
from pydantic import BaseModel, ConfigDict, Field

from flows.runners import SettingsTaskRunner
from nightshift.errors import TrackingError
from nightshift.naming import MODEL_NAME_PATTERN, artifact_key
from nightshift.settings import get_settings
from tasks.model.score import (
    ScoreSummary,
    combine_parts_task,
    default_output,
    plan_parts,
    remove_path,
    score_file_task,
    score_part_task,
)
from tasks.registry.store import TrackingConfig
from tasks.registry.versions import CHAMPION, get_alias_task, load_version_task


class BatchPredictParams(BaseModel):
    """Parameters of a batch scoring run (a Prefect UI form)."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(..., min_length=1, title="Input", description="Path or fsspec URL of a .csv/.parquet file.")
    output: str | None = Field(None, title="Output", description="Parquet path/URL; default <input>.predictions.parquet.")
    model_name: str | None = Field(None, pattern=MODEL_NAME_PATTERN, title="Registered model name",
                                   description="Model whose champion scores the file; default NIGHTSHIFT_MODEL_NAME.")
    chunk_rows: int = Field(200_000, ge=1_000, le=5_000_000, title="Chunk rows", description="Rows scored at a time.")
    keep_columns: list[str] = Field(default_factory=list, title="Columns to keep",
                                    description="Input columns copied into the output (ids, dates).")


@flow(name="batch-predict", log_prints=True, task_runner=SettingsTaskRunner())
def batch_predict(params: BatchPredictParams) -> ScoreSummary:
    """Validate a file against the champion's contract and write its predictions, in chunks.

    Args:
        params: The file to score, where to write predictions and the chunk size.
    """
    settings = get_settings()
    cfg = TrackingConfig.from_settings(settings)
    name = params.model_name or settings.model_name
    version = get_alias_task(cfg, name, CHAMPION)
    if version is None:
        raise TrackingError(f"Model '{name}' has no champion yet: run the nightly flow (or promote a version) first.")
    champion = load_version_task(cfg, name, version)  # by number: the champion read above, even if the alias moves
    model, contract = champion.model, champion.contract
    output = params.output or default_output(params.source)
    keep = tuple(params.keep_columns)
    # On Dask (NIGHTSHIFT_TASK_RUNNER=dask) a Parquet file's row groups are scored in parallel parts, then joined.
    parts = plan_parts(params.source, params.chunk_rows) if settings.task_runner == "dask" else []
    if len(parts) > 1:
        parts_dir = f"{output}.parts"
        scored = score_part_task.map(unmapped(model), unmapped(contract), unmapped(params.source), parts,
                                     unmapped(parts_dir), unmapped(params.chunk_rows), unmapped(keep))
        try:
            summary = combine_parts_task(scored.result(), params.source, output)
        finally:
            wait(scored)  # .result() raises at the first failed part while others may still be writing
            remove_path(parts_dir)  # nothing partial is left, whichever part failed
    else:
        summary = score_file_task(model, contract, params.source, output, params.chunk_rows, keep)
    description = f"{summary.describe()} Scored by {name} v{version}."
    if summary.classes:  # a regressor predicts numbers: its histogram is the whole picture
        create_table_artifact(key=artifact_key("batch-predict", name), table=summary.class_table(),
                              description=description)
    shown = f"P({summary.classes[-1]})" if summary.classes else "the predicted value"
    create_table_artifact(key=artifact_key("batch-scores", name), table=summary.histogram_table(),
                          description=f"Histogram of {shown}. {description}")
    print(f"{name} v{version} scored {summary.rows} rows in {summary.chunks} chunks → {summary.output}")
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m flows.batch_predict", description=batch_predict.description)
    parser.add_argument("source")
    parser.add_argument("--output")
    parser.add_argument("--model-name")
    parser.add_argument("--chunk-rows", type=int, default=200_000)
    parser.add_argument("--keep", nargs="*", default=[], help="input columns to copy into the output")
    a = parser.parse_args(sys.argv[1:])
    from flows import batch_predict as module  # importable by Dask workers, unlike __main__

    result = module.batch_predict(module.BatchPredictParams(source=a.source, output=a.output, model_name=a.model_name,
                                              chunk_rows=a.chunk_rows, keep_columns=a.keep))
    print(result.model_dump_json(indent=2))
