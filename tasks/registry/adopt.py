"""Adoption: the model a team already serves becomes a catalogue model's first version and its `champion`.

The fitted model is loaded (a skops file trusting only reviewed types; a pickle only when its owner vouches for it;
a `runs:/` or `models:/` URI from the configured tracking server), checked against the catalogue (task, label,
non-features) and a labeled reference table (columns, classes, predictions), and only then recorded: a run with the
reference's contract, drift reference and metrics, version 1 with its tags and a gate-like decision (so a later
rollback treats it as accepted), the `champion` alias, and an audit record. A refusal registers nothing.
"""

from __future__ import annotations

import getpass
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from nightshift.errors import NightshiftError
from tasks.registry.audit import AuditRecord, append_audit
from tasks.registry.locks import model_lock
from tasks.registry.runs import (
    CONTRACT_ARTIFACT,
    REFERENCE_ARTIFACT,
    SKOPS_TRUSTED_TYPES,
    DatasetRef,
    finish_run,
    log_training,
    start_run,
)
from tasks.registry.store import TrackingConfig, _mlflow
from tasks.registry.versions import (
    CHAMPION,
    GATE_TAG,
    get_alias,
    is_prompt,
    list_versions,
    move_champion,
    register_model_version,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from tasks.catalogue.schema import CatalogueModel
    from tasks.data.contract import Contract

SKOPS_SUFFIXES = (".skops",)
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
MLFLOW_SCHEMES = ("runs:/", "models:/")
ADOPTED_FROM_TAG = "nightshift.adopted_from"
DEFAULT_REASON = "adopted the model in production"
REFERENCE_SEED = 42  # samples the drift reference when the table is longer than settings.reference_rows


class AdoptionRefused(NightshiftError):
    """A model that cannot be adopted as given; nothing was registered."""


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {(lines[0] if lines else '')[:300]}"


def _import_hint(exc: BaseException) -> str:
    """What to do when loading failed because a class inside the model does not import."""
    if isinstance(exc, (ImportError, AttributeError)) or "import" in str(exc).lower():
        return "; a class of your own must import: set the catalogue's estimator.code_path (with its factory)"
    return ""


def current_user() -> str:
    """Who adopts, when --by is not given: the login name ('unknown' when the system has none)."""
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        return "unknown"


# --------------------------------------------------------------------------------------------
# Loading the fitted model.
# --------------------------------------------------------------------------------------------
def load_fitted(cfg: TrackingConfig, source: str, trusted: list[str], trust_pickle: bool) -> Any:
    """The fitted model behind `source`: a .skops file, a pickle/joblib file (only with `trust_pickle`), or an MLflow
    `runs:/` / `models:/` URI on the configured tracking server."""
    if source.startswith(MLFLOW_SCHEMES):
        model = _from_mlflow(cfg, source)
    else:
        suffix = "." + source.lower().rsplit(".", 1)[-1] if "." in source.rsplit("/", 1)[-1] else ""
        if suffix in SKOPS_SUFFIXES:
            model = _from_skops(source, _read_bytes(source), trusted)
        elif suffix in PICKLE_SUFFIXES:
            if not trust_pickle:
                raise AdoptionRefused(
                    f"not adopted: {source} is a pickle, and loading a pickle runs whatever code it holds; pass "
                    "--trust-pickle only for a file you made or trust, or save the model with skops "
                    "(skops.io.dump(model, 'model.skops')) and adopt that file.")
            model = _from_pickle(source, _read_bytes(source))
        else:
            raise AdoptionRefused(f"not adopted: cannot tell how to load {source}: give a .skops file, a "
                                  ".pkl/.pickle/.joblib file (with --trust-pickle), or a runs:/ or models:/ URI.")
    if not callable(getattr(model, "predict", None)):
        raise AdoptionRefused(f"not adopted: {source} holds a {type(model).__name__}, not a fitted scikit-learn "
                              "model (it has no predict).")
    return model


def _read_bytes(source: str) -> bytes:
    import fsspec

    try:
        with fsspec.open(source, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise AdoptionRefused(f"not adopted: there is no model file at {source}.") from None
    except Exception as exc:
        raise AdoptionRefused(f"not adopted: could not read {source} ({_first_line(exc)}).") from None


def _from_skops(source: str, data: bytes, trusted: list[str]) -> Any:
    """skops refuses to load a type nobody vouched for: SKOPS_TRUSTED_TYPES and the catalogue's trusted_types."""
    import skops.io as sio

    try:
        found = sorted(sio.get_untrusted_types(data=data))
    except Exception as exc:
        raise AdoptionRefused(f"not adopted: {source} is not a skops file ({_first_line(exc)}).") from None
    refused = [t for t in found if t not in SKOPS_TRUSTED_TYPES and t not in trusted]
    if refused:
        raise AdoptionRefused(f"not adopted: {source} holds type(s) nobody declared trusted: {', '.join(refused)}. "
                              "Review them, then list them under estimator.trusted_types in models.yaml (a type "
                              "that runs code when loaded must never be listed).")
    try:
        return sio.loads(data, trusted=found)
    except Exception as exc:
        raise AdoptionRefused(f"not adopted: {source} does not load with skops ({_first_line(exc)})"
                              f"{_import_hint(exc)}.") from None


def _from_pickle(source: str, data: bytes) -> Any:
    import io

    import joblib

    try:
        return joblib.load(io.BytesIO(data))  # reads plain pickles too
    except Exception as exc:
        raise AdoptionRefused(f"not adopted: {source} does not load ({_first_line(exc)}){_import_hint(exc)}.") \
            from None


def _from_mlflow(cfg: TrackingConfig, source: str) -> Any:
    mlflow = _mlflow(cfg)
    import mlflow.sklearn

    try:
        return mlflow.sklearn.load_model(source)
    except Exception as exc:
        raise AdoptionRefused(f"not adopted: {source} does not load as a scikit-learn model from the tracking "
                              f"server at {cfg.tracking_uri} ({_first_line(exc)}).") from None


# --------------------------------------------------------------------------------------------
# Checking it against the catalogue and the reference.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Checked:
    """What the reference says about the model: its features, the labeled rows' metrics, contract, drift reference."""

    features: list[str]
    rows: int
    labeled: int
    metrics: dict[str, float]
    contract: Contract
    reference: pd.DataFrame
    notes: list[str]


def model_features(model: Any, frame: pd.DataFrame, entry: CatalogueModel) -> tuple[list[str], list[str]]:
    """The model's input columns (its feature_names_in_, else the reference's columns minus the catalogue's label and
    non-features, in the reference's order), and notes on how they were found."""
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        return [str(c) for c in names], []
    never = {entry.label, *entry.non_features}
    features = [str(c) for c in frame.columns if c not in never]
    return features, [f"the model has no feature_names_in_: its {len(features)} input column(s) are the reference's "
                      "columns minus the label and the catalogue's non-features, passed in the reference's order"]


def _labels(model: Any, raw: pd.Series, entry: CatalogueModel) -> tuple[pd.Series, list[Any] | None]:
    """The label column in the model's terms (class values, or numbers; blank stays missing) and its classes."""
    import pandas as pd

    from tasks.data.contract import align_labels
    from tasks.model.metrics import model_classes

    kind = type(model).__name__
    classes = model_classes(model)
    if classes is not None:
        aligned, unknown = align_labels(raw, classes)
        if len(unknown):
            shown = sorted({str(v) for v in unknown.unique()})
            raise AdoptionRefused(f"not adopted: the reference's label '{entry.label}' has value(s) the {kind} does "
                                  f"not predict: {', '.join(repr(v) for v in shown[:10])}"
                                  f"{f' (+{len(shown) - 10} more)' if len(shown) > 10 else ''}; its classes are "
                                  f"{classes}.")
        return aligned, classes
    blank = raw.isna() | raw.astype(str).str.strip().eq("")
    numbers = pd.to_numeric(raw.where(~blank), errors="coerce")
    bad = raw[~blank & numbers.isna()]
    if len(bad):
        shown = sorted({str(v) for v in bad.unique()})[:10]
        raise AdoptionRefused(f"not adopted: the reference's label '{entry.label}' has value(s) that are not numbers, "
                              f"which a regressor cannot be measured against: {', '.join(map(repr, shown))}.")
    return numbers.astype(float), None


def _scores(model: Any, features: pd.DataFrame, classes: list[Any] | None) -> np.ndarray:
    import numpy as np

    from tasks.model.metrics import predict_scores

    kind = type(model).__name__
    try:
        with warnings.catch_warnings():  # fitted on unnamed columns: model_features' note says so once
            warnings.filterwarnings("ignore", message="X has feature names")
            scores = predict_scores(model, features)
    except Exception as exc:
        raise AdoptionRefused(f"not adopted: the {kind} cannot predict the reference rows ({_first_line(exc)}).") \
            from None
    expected = (len(features),) if classes is None else (len(features), len(classes))
    if scores.shape != expected:
        raise AdoptionRefused(f"not adopted: the {kind} gave {'predictions' if classes is None else 'probabilities'} "
                              f"of shape {scores.shape} for the reference rows, expected {expected}.")
    bad = int((~np.isfinite(scores)).reshape(len(features), -1).any(axis=1).sum())
    if bad:
        raise AdoptionRefused(f"not adopted: the {kind} predicts NaN or infinite values for {bad} of the "
                              f"{len(features)} reference rows.")
    return scores


def check_model(model: Any, entry: CatalogueModel, frame: pd.DataFrame, *, range_tolerance: float,
                reference_rows: int) -> Checked:
    """Refuse a model that does not fit the catalogue entry or cannot predict the reference; else measure it on the
    reference's labeled rows and build its contract and drift reference."""
    import numpy as np

    from tasks.data.contract import infer_contract
    from tasks.data.datasets import FeatureSpec
    from tasks.model.metrics import model_task, quality_metrics
    from tasks.monitoring.drift import build_reference

    kind, task = type(model).__name__, model_task(model)
    if task != entry.task:
        what = "a classifier (it has classes_)" if task == "classification" else "a regressor (it has no classes_)"
        raise AdoptionRefused(f"not adopted: the {kind} is {what}, but the catalogue gives '{entry.name}' task: "
                              f"{entry.task}; adopt a model of that task or change the catalogue's task.")
    if task == "classification" and not callable(getattr(model, "predict_proba", None)):
        raise AdoptionRefused(f"not adopted: the {kind} has no predict_proba: a classifier must give class "
                              "probabilities (the gate, drift and estimates read them).")
    if frame.empty:
        raise AdoptionRefused("not adopted: the reference table has no rows.")
    features, notes = model_features(model, frame, entry)
    missing = [c for c in [entry.label, *features] if c not in frame.columns]
    if missing:
        raise AdoptionRefused(f"not adopted: the reference has no column(s) {', '.join(map(repr, missing))}, which "
                              f"the {kind} needs ({'the label and ' if entry.label in missing else ''}its features).")
    if not features:
        raise AdoptionRefused(f"not adopted: the reference has no feature columns besides the label "
                              f"'{entry.label}' and the catalogue's non-features.")
    labels, classes = _labels(model, frame[entry.label], entry)
    labeled = labels.notna().to_numpy()
    if not labeled.any():
        raise AdoptionRefused(f"not adopted: the reference's label '{entry.label}' is blank in every row: the "
                              "model's metrics cannot be measured.")
    scores = _scores(model, frame[features], classes)
    y = labels[labeled].to_numpy()
    y = y.astype(np.asarray(classes).dtype) if classes is not None else y.astype(float)
    metrics = quality_metrics(y, scores[labeled], classes)
    gate_value = metrics.get(entry.gate.metric, float("nan"))
    if np.isnan(gate_value):
        raise AdoptionRefused(f"not adopted: the gate's {entry.gate.metric} cannot be measured on the reference's "
                              f"{int(labeled.sum())} labeled row(s) (one class only, or labels that never vary), and "
                              "later versions are compared against it; give a reference with every class.")
    data = frame[features].copy()
    data[entry.label] = labels
    numeric = [c for c in features if _is_numeric(frame[c])]
    spec = FeatureSpec(label=entry.label, numeric=tuple(numeric),
                       categorical=tuple(c for c in features if c not in numeric),
                       ignored=tuple(c for c in entry.non_features if c in frame.columns and c not in features))
    contract = infer_contract(data, spec, range_tolerance=range_tolerance, task=entry.task,
                              valid_ranges=entry.valid_ranges)
    order = {name: i for i, name in enumerate(features)}  # the model's input order (sklearn checks it), not spec's
    update: dict[str, Any] = {"columns": sorted(contract.columns, key=lambda c: order[c.name])}
    if classes is not None:
        update["label_classes"] = sorted(classes, key=str)  # every class the model predicts, seen or not
    contract = contract.model_copy(update=update)
    reference = build_reference(model, data, features, entry.label, reference_rows, REFERENCE_SEED)
    return Checked(features=features, rows=len(frame), labeled=int(labeled.sum()), metrics=metrics,
                   contract=contract, reference=reference, notes=notes)


def _is_numeric(series: pd.Series) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series))


# --------------------------------------------------------------------------------------------
# Recording it: run, version 1, decision, champion, audit.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Adoption:
    """What an adoption recorded."""

    model_name: str
    version: str
    source: str
    reference: str
    estimator: str
    task: str
    run_id: str
    rows: int
    labeled_rows: int
    metrics: dict[str, float]
    features: list[str]
    contract_fingerprint: str
    dataset_fingerprint: str
    champion: str | None
    audit: AuditRecord
    audit_run_id: str
    notes: list[str]


def refuse_if_versions(cfg: TrackingConfig, name: str) -> None:
    """Adoption starts a model's history: a registered model with versions (or a prompt of that name) is refused."""
    if is_prompt(cfg, name):
        raise AdoptionRefused(f"not adopted: '{name}' is a prompt in the registry, not a model.")
    versions = list_versions(cfg, name)
    if not versions:
        return
    champion = get_alias(cfg, name, CHAMPION)
    adopted = [v for v in versions if (v.tags or {}).get(ADOPTED_FROM_TAG)]
    if adopted and champion is None:
        v = adopted[-1]
        raise AdoptionRefused(
            f"not adopted: '{name}' v{v.version} was adopted from {v.tags[ADOPTED_FROM_TAG]} but never made champion "
            f"(an interrupted adoption); make it champion with python -m flows.rollback 'finish the adoption' "
            f"--model-name {name} --to-version {v.version}.")
    newest = versions[0].version
    raise AdoptionRefused(
        f"not adopted: '{name}' already has {len(versions)} registered version(s) (newest v{newest}, champion "
        f"{'v' + champion if champion else 'none'}), and adoption only starts a model's history; let a night's gate "
        f"judge a new version against the champion (python -m flows.model_night {name}), make an existing version "
        f"champion (python -m flows.rollback 'why' --model-name {name} --to-version N), or adopt under a new "
        "catalogue name.")


def adopt_model(cfg: TrackingConfig, entry: CatalogueModel, source: str, reference: str, *, trust_pickle: bool = False,
                reason: str | None = None, by: str | None = None, reference_rows: int = 100_000,
                range_tolerance: float = 0.5) -> Adoption:
    """Load, check and register the model at `source` as `entry`'s first version and champion, measured on the
    labeled table at `reference`; AdoptionRefused (or a load/config error) with nothing registered otherwise."""
    from tasks.data.datasets import fingerprint, load_table
    from tasks.model.factory import allow_code_path

    name, reason, by = entry.name, reason or DEFAULT_REASON, by or current_user()
    refuse_if_versions(cfg, name)  # cheap, before loading anything
    if entry.estimator.code_path:  # the team's classes inside the model must import
        allow_code_path(entry.estimator.code_path, f"model '{name}'")
    model = load_fitted(cfg, source, list(entry.estimator.trusted_types), trust_pickle)
    frame = load_table(reference)
    checked = check_model(model, entry, frame, range_tolerance=range_tolerance, reference_rows=reference_rows)
    data_fp = fingerprint(frame)
    with model_lock(cfg, name, "promote"):
        refuse_if_versions(cfg, name)  # again, under the lock: a night may have registered one meanwhile
        run_id, version = _record(cfg, entry, model, checked, frame, source, reference, data_fp, reason, by)
        before = move_champion(cfg, name, version)
        metric = entry.gate.metric
        record = AuditRecord(time=datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ"), model_name=name,
                             action="adopted", from_version=before.champion, to_version=version, metric=metric,
                             challenger=checked.metrics[metric], reason=reason, by=by, dataset_fingerprint=data_fp)
        audit_run = append_audit(cfg, record)
    return Adoption(model_name=name, version=version, source=source, reference=reference,
                    estimator=type(model).__name__, task=entry.task, run_id=run_id, rows=checked.rows,
                    labeled_rows=checked.labeled, metrics=checked.metrics, features=checked.features,
                    contract_fingerprint=checked.contract.fingerprint(), dataset_fingerprint=data_fp,
                    champion=get_alias(cfg, name, CHAMPION), audit=record, audit_run_id=audit_run,
                    notes=checked.notes)


def _record(cfg: TrackingConfig, entry: CatalogueModel, model: Any, checked: Checked, frame: pd.DataFrame,
            source: str, reference: str, data_fp: str, reason: str, by: str) -> tuple[str, str]:
    """The adoption run (failed, and nothing registered, if the model cannot be stored) and the registered version."""
    from tasks.model.gate import GateDecision

    name, metric = entry.name, entry.gate.metric
    tags = {"nightshift.kind": "adopt", "nightshift.model_name": name, ADOPTED_FROM_TAG: source,
            "nightshift.dataset_fingerprint": data_fp}
    run_id = start_run(cfg, run_name=f"adopt-{name}", tags=tags)
    try:
        logged = log_training(
            cfg, run_id, model=model, input_example=checked.reference[checked.features].head(5),
            params={"adopted_from": source, "reference": reference, "label": entry.label, "task": entry.task,
                    "estimator": type(model).__name__, "rows": checked.rows, "labeled_rows": checked.labeled,
                    "features": len(checked.features), "adopted_by": by},
            metrics={**{f"test_{k}": v for k, v in checked.metrics.items()}, "rows_reference": checked.rows,
                     "rows_labeled": checked.labeled},
            datasets=[DatasetRef(frame, f"{name}-adoption-reference", reference, data_fp, "evaluation",
                                 entry.label)],
            artifacts={CONTRACT_ARTIFACT: checked.contract.model_dump(mode="json")},
            frames={REFERENCE_ARTIFACT: checked.reference}, trusted_types=list(entry.estimator.trusted_types))
        decision = GateDecision(
            promote=True, reason=f"adopted: {source}, {metric} {checked.metrics[metric]:.4f} on the reference's "
                                 f"{checked.labeled} labeled rows ({reason})",
            metric=metric, rows=checked.labeled, challenger=checked.metrics[metric], champion=None,
            confidence=entry.gate.confidence, min_margin=entry.gate.min_margin,
            absolute_floor=entry.gate.absolute_floor, resamples=0)
        version = register_model_version(cfg, name, logged, tags={
            ADOPTED_FROM_TAG: source, "nightshift.adopted_by": by, "nightshift.dataset_fingerprint": data_fp,
            "nightshift.contract_fingerprint": checked.contract.fingerprint(), "nightshift.test_metrics_on":
            f"adoption reference {reference}", **{f"test_{k}": f"{v:.6f}" for k, v in checked.metrics.items()},
            GATE_TAG: decision.model_dump_json()})
    except BaseException:
        finish_run(cfg, run_id, "FAILED")
        raise
    finish_run(cfg, run_id, "FINISHED")
    return run_id, version
