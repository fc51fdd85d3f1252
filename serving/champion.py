"""A loaded champion (`Served`): its load from the registry, its smoke test and schema check at reload, and the
replies it scores for /invocations and /predict."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from pydantic import BaseModel, ValidationError

from nightshift.errors import TrackingError
from serving.compiled import Batch, CompiledScorer, compile_pipeline
from serving.errors import NoChampionError, ScoringError
from serving.requests import columns_from_scoring_json, columns_of, prepare, request_model

if TYPE_CHECKING:  # tasks.* import Prefect, which creates its home dir on import: load them only when serving
    from tasks.data.contract import Contract
    from tasks.registry.store import TrackingConfig


COMPILED_MAX_ROWS = 64  # above this the pipeline's vectorised path is as fast and needs no per-row walk
SAMPLE_ROWS = 64  # reference rows kept for the compile check and the smoke test


@dataclass(frozen=True)
class Served:
    """One loaded champion: the fitted pipeline, where it came from, its request schema and its scorers."""

    model: Any
    name: str
    version: str
    run_id: str
    alias: str
    contract: Contract
    loaded_at: str
    request_model: type[BaseModel] = field(repr=False)
    sample: Batch = field(repr=False)
    compiled: CompiledScorer | None = field(default=None, repr=False)
    compiled_note: str = ""

    @cached_property
    def classes(self) -> list[Any]:
        """Class labels in probability-column order; empty for a regressor (it predicts a number)."""
        return np.asarray(self.model.classes_).tolist() if self.regression is False else []

    @cached_property
    def regression(self) -> bool:
        """The model predicts a number, not a class."""
        return not hasattr(self.model, "classes_")

    @property
    def scorer(self) -> str:
        """What scores small requests, in a word or two (the `scorer` label of /metrics)."""
        return f"compiled {self.compiled.kind}" if self.compiled is not None else "sklearn pipeline"

    def predict_proba(self, batch: Batch) -> np.ndarray:
        """Probabilities: the compiled scorer for small batches (verified equal at load), else the pipeline. A
        regressor's predicted numbers (1-D)."""
        if self.compiled is not None and len(batch) <= COMPILED_MAX_ROWS:
            return self.compiled(batch)
        if self.regression:
            return np.asarray(self.model.predict(batch.frame(self.contract.features)), dtype=float).reshape(-1)
        return np.asarray(self.model.predict_proba(batch.frame(self.contract.features)))

    def info(self) -> dict[str, Any]:
        """What /version reports."""
        return {"model_name": self.name, "model_version": self.version, "run_id": self.run_id, "alias": self.alias,
                "contract_fingerprint": self.contract.fingerprint(), "loaded_at": self.loaded_at,
                "features": self.contract.features, "task": self.contract.task, "classes": self.classes,
                "scorer": self.compiled_note}


def load_champion(cfg: TrackingConfig, name: str, alias: str | None = None) -> Served:
    """Load the version behind `alias` (default champion) from the registry, never a local file, with its contract."""
    from tasks.registry.versions import CHAMPION, get_alias

    alias = alias or CHAMPION
    version = get_alias(cfg, name, alias)
    if version is None:
        raise NoChampionError(503, f"model '{name}' has no '{alias}' alias yet: nothing to serve")
    return load_served(cfg, name, version, alias)  # by number: exactly the version the alias named just now


def load_served(cfg: TrackingConfig, name: str, version: str, alias: str) -> Served:
    """Load registry version `version` (a number) of `name` with its contract, reference sample and compiled scorer;
    `alias` is what it is served as (champion, shadow). A ScoringError 404 when the registry has no such version."""
    from tasks.registry.runs import REFERENCE_ARTIFACT, load_frame_artifact
    from tasks.registry.versions import load_version

    if not str(version).isdigit():
        raise ScoringError(400, f"model version {version!r} is not a version number")
    try:
        loaded = load_version(cfg, name, str(version))
    except TrackingError as exc:  # the registry's "no such version" (get_version's words); other failures go up
        if f"has no version {version}" in str(exc):
            raise ScoringError(404, f"model '{name}' has no version {version} in the registry") from None
        raise
    model, contract, run_id = loaded.model, loaded.contract, loaded.ref.run_id
    reference = load_frame_artifact(cfg, run_id, REFERENCE_ARTIFACT)
    frame = reference[contract.features].head(SAMPLE_ROWS)
    sample = prepare(columns_of(frame), len(frame), contract, max(len(frame), 1))
    categories = {c.name: list(c.categories or []) for c in contract.columns if c.kind != "numeric"}
    try:
        compiled, note = (None, "a regressor: scored by its own predict") if not hasattr(model, "classes_") else \
            compile_pipeline(model, contract.features, contract.numeric, categories, sample)
    except Exception as exc:  # an unexpected pipeline shape: serve it through sklearn
        compiled, note = None, f"not compiled: {type(exc).__name__}: {str(exc)[:200]}"
    return Served(model=model, name=name, version=str(version), run_id=run_id, alias=alias, contract=contract,
                  loaded_at=datetime.now(timezone.utc).isoformat(), request_model=request_model(contract),
                  sample=sample, compiled=compiled, compiled_note=note if compiled else f"sklearn pipeline ({note})")


def smoke_test(served: Served, latency_budget_ms: float) -> None:
    """Contract-valid sample rows must give finite probabilities of the right shape, fast enough; raises otherwise."""
    rows = served.sample
    if len(rows) == 0:
        raise ScoringError(422, "smoke test: the model's reference sample is empty")
    proba = served.predict_proba(rows)
    expected = (len(rows),) if served.regression else (len(rows), len(served.classes))
    what = "predictions" if served.regression else "probabilities"
    if proba.shape != expected:
        raise ScoringError(422, f"smoke test: {what} have shape {proba.shape}, expected {expected}")
    if not np.isfinite(proba).all():
        raise ScoringError(422, f"smoke test: {int((~np.isfinite(proba)).sum())} predicted {what} are NaN/inf")
    timings = []
    for i in range(5):
        start = time.perf_counter()
        served.predict_proba(rows.row(i % len(rows)))
        timings.append((time.perf_counter() - start) * 1000)
    if sorted(timings)[2] > latency_budget_ms:
        raise ScoringError(422, f"smoke test: single-row latency {sorted(timings)[2]:.1f} ms exceeds the budget "
                                f"{latency_budget_ms:g} ms")


def check_schema(live: Served | None, candidate: Served, allow_change: bool) -> list[str]:
    """How the candidate's inputs or classes differ from the live model's; a 422 unless the caller allows a change."""
    from tasks.data.contract import schema_changes

    if live is None:  # nothing served yet: no caller to break
        return []
    changes = schema_changes(live.contract, candidate.contract)
    if changes and not allow_change:
        raise ScoringError(422, f"input schema differs from the live v{live.version}: {'; '.join(changes)}; "
                                "pass allow_schema_change=true to swap anyway")
    return changes


class Scored(NamedTuple):
    """One scored request: labels (a regressor's numbers) and rounded probabilities for the reply; the checked rows
    and the unrounded probabilities (None for a regressor) for traffic capture."""

    labels: list[Any]
    probabilities: list[list[float]]
    batch: Batch
    raw: np.ndarray | None


def _score(served: Served, columns: dict[str, list[Any]], n_rows: int, max_rows: int) -> Scored:
    """Labels and rounded probabilities for request columns; input errors become 4xx ScoringErrors."""
    rows = prepare(columns, n_rows, served.contract, max_rows)
    try:
        proba = served.predict_proba(rows)
    except (ValueError, TypeError) as exc:  # input the checks above did not foresee: still the caller's
        raise ScoringError(422, f"could not score these rows: {str(exc).splitlines()[0][:200]}") from None
    if served.regression:
        return Scored([float(v) for v in proba], [], rows, None)
    labels = np.asarray(served.classes, dtype=object)[np.argmax(proba, axis=1)]
    return Scored([v.item() if hasattr(v, "item") else v for v in labels], np.round(proba, 6).tolist(), rows, proba)


Reply = tuple[dict[str, Any], Scored, list[Any] | None]  # the body, what was scored, the rows' own ids (or None)


def invocations_reply(served: Served, payload: Any, max_rows: int, id_column: str | None = None) -> Reply:
    """The /invocations answer for MLflow scoring JSON, and the values of `id_column` if the request has it."""
    columns, n_rows = columns_from_scoring_json(payload)
    scored = _score(served, columns, n_rows, max_rows)
    body = {"predictions": scored.labels, "model_version": served.version} if served.regression else {
        "predictions": scored.labels, "probabilities": scored.probabilities, "classes": served.classes,
        "model_version": served.version}
    return body, scored, columns.get(id_column) if id_column else None


def predict_reply(served: Served, payload: Any, max_rows: int, id_column: str | None = None) -> Reply:
    """The /predict answer: the body validated against the contract's request model, one labelled row per input."""
    try:
        body = served.request_model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ScoringError(422, f"{where}: {first['msg']} ({len(exc.errors())} problem(s) in the request)") from None
    rows = [r.model_dump() for r in body.rows]  # type: ignore[attr-defined]
    scored = _score(served, {name: [r[name] for r in rows] for name in served.contract.features}, len(rows), max_rows)
    ids = None
    if id_column:  # not a feature: the request model dropped it, the raw rows still have it
        raw = [r.get(id_column) if isinstance(r, dict) else None for r in payload["rows"]]
        ids = raw if any(v is not None for v in raw) else None
    reply = {"model_version": served.version, "predictions": [{"value": value} for value in scored.labels]
             if served.regression else [{"label": label, "probabilities": dict(zip(map(str, served.classes), p))}
                                        for label, p in zip(scored.labels, scored.probabilities)]}
    return reply, scored, ids
