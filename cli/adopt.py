"""`python -m cli.adopt MODEL --from FILE|runs:/...|models:/... --reference DATA`: make the model a team already serves
in production the catalogue model's first version and its champion, measured on a labeled reference table."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

EPILOG = """\
A .skops file loads trusting only the reviewed types and the catalogue's estimator.trusted_types; a pickle
(.pkl, .pickle, .joblib) runs code when loaded, so it loads only with --trust-pickle; runs:/ and models:/ URIs load
from the configured MLflow tracking server. The reference table (.csv/.parquet) needs the label and the model's
feature columns; rows with a blank label are left out of the metrics. Nothing is registered when a check fails
(exit 2, the reason on stderr)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cli.adopt", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", help="the catalogue model to adopt it as (models.yaml)")
    parser.add_argument("--from", dest="source", required=True, metavar="FILE|URI",
                        help="the fitted model: a .skops/.pkl/.pickle/.joblib file, or runs:/... or models:/...")
    parser.add_argument("--reference", required=True, metavar="DATA",
                        help="labeled rows (path/URL, .csv or .parquet): contract, drift reference and metrics")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="load a pickle/joblib file (it runs code when loaded: only a file you made or trust)")
    parser.add_argument("--reason", help="why, for the audit trail (default: adopted the model in production)")
    parser.add_argument("--by", help="who adopts it, for the audit trail (default: your login name)")
    parser.add_argument("--catalogue", type=Path, help="catalogue file (default NIGHTSHIFT_CATALOGUE_PATH or models.yaml)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Adopt the model; print what was recorded (exit 0), or one sentence on stderr (exit 2) with nothing registered."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # its table-creation notes are not ours to show

    from nightshift.errors import NightshiftError
    from nightshift.settings import get_settings
    from tasks.catalogue.schema import load_catalogue
    from tasks.registry.adopt import adopt_model
    from tasks.registry.store import TrackingConfig

    settings = get_settings()
    try:
        entry = load_catalogue(args.catalogue or settings.catalogue_path).get(args.model)
        adoption = adopt_model(TrackingConfig.from_settings(settings), entry, args.source, args.reference,
                               trust_pickle=args.trust_pickle, reason=args.reason, by=args.by,
                               reference_rows=settings.reference_rows, range_tolerance=settings.range_tolerance)
    except NightshiftError as exc:
        print(exc, file=sys.stderr)
        return 2
    deployed, refused = _redeploy(settings, adoption.model_name)
    _print_summary(adoption, entry.label, deployed)
    if refused:
        print(refused, file=sys.stderr)
        return 2
    return 0


def _redeploy(settings: Any, name: str) -> tuple[str, str | None]:
    """Ask the configured model server(s) to load the new champion: what happened, and a refusal sentence if any."""
    from tasks.registry.promote import DeployRefused, redeploy

    token = settings.server_token.get_secret_value() if settings.server_token else None
    try:
        outcome = redeploy(settings.server_url, token, name)
    except DeployRefused as exc:
        return "refused", (f"'{name}' was adopted and is champion in the registry, but the model server did not "
                           f"load it: {exc}")
    if outcome.status == "not-deployed":
        return "not asked (NIGHTSHIFT_SERVER_URL unset)", None
    return f"loaded it ({', '.join(outcome.servers)})", None


def _print_summary(a: Any, label: str, deployed: str) -> None:
    from rich.console import Console
    from rich.table import Table

    metrics = ", ".join(f"{k} {v:.4f}" for k, v in a.metrics.items())
    shown = ", ".join(a.features[:8]) + (f", ... (+{len(a.features) - 8})" if len(a.features) > 8 else "")
    table = Table(title=f"Adopted {a.model_name} v{a.version} as champion", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows = [
        ("model", f"{a.model_name} ({a.task}, label '{label}')"),
        ("version", f"{a.version} (MLflow run {a.run_id})"),
        ("source", f"{a.source} ({a.estimator})"),
        ("reference", f"{a.reference}: {a.rows} rows, {a.labeled_rows} labeled, data {a.dataset_fingerprint[:12]}"),
        ("metrics", f"{metrics} (test_* of the version, measured on the reference's labeled rows: optimistic if "
                    "the model was trained on them)"),
        ("contract", f"{len(a.features)} columns: {shown}; fingerprint {a.contract_fingerprint[:12]}"),
        ("champion", f"alias champion -> v{a.champion}"),
        ("audit", f"{a.audit.action} by {a.audit.by} at {a.audit.time}: {a.audit.reason} (run {a.audit_run_id})"),
        ("model server", deployed),
        *(("note", note) for note in a.notes),
    ]
    for key, value in rows:
        table.add_row(key, value)
    Console(width=None if sys.stdout.isatty() else 140).print(table)


if __name__ == "__main__":
    sys.exit(main())
