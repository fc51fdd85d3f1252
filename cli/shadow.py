"""`python -m cli.shadow`: a model's shadow by hand: `status MODEL` (the version in shadow and its newest live
comparison), `start MODEL VERSION` (every model server in NIGHTSHIFT_SERVER_URL loads it beside the champion, or
none does; the nights judge it from then on), `stop MODEL` (every server drops it). Every step is audited."""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC, datetime


def main(argv: list[str] | None = None) -> int:
    """Show, start or stop a model's shadow; exit 2 with a sentence when it cannot be done."""
    parser = argparse.ArgumentParser(prog="python -m cli.shadow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="the version in shadow, since when, and its newest live comparison")
    status.add_argument("model")
    start = sub.add_parser("start", help="load a version beside the champion on every model server")
    start.add_argument("model")
    start.add_argument("version", help="the registered version to shadow (not the champion)")
    start.add_argument("--reason", default="started by hand", help="kept in the audit trail")
    start.add_argument("--by", default=None, help="who (default: your login name)")
    stop = sub.add_parser("stop", help="take the shadow off every model server")
    stop.add_argument("model")
    stop.add_argument("--reason", default="stopped by hand", help="kept in the audit trail")
    stop.add_argument("--by", default=None, help="who (default: your login name)")
    args = parser.parse_args(argv)

    from nightshift.errors import NightshiftError
    from nightshift.settings import get_settings
    from tasks.registry.audit import decided_by
    from tasks.registry.store import TrackingConfig

    settings = get_settings()
    cfg = TrackingConfig.from_settings(settings)
    token = settings.server_token.get_secret_value() if settings.server_token else None
    try:
        if args.command == "status":
            print(_status(cfg, args.model))
            return 0
        with decided_by(args.by or getpass.getuser()):
            if args.command == "start":
                print(_start(cfg, args.model, args.version, args.reason, settings.server_url, token))
            else:
                print(_stop(cfg, args.model, args.reason, settings.server_url, token))
    except NightshiftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _status(cfg, name: str) -> str:
    from tasks.monitoring.shadow import LiveComparison
    from tasks.registry.quality import quality_run
    from tasks.registry.shadow import SHADOW_NIGHT_TAG, shadow_state
    from tasks.registry.versions import alias_state

    champion, state = alias_state(cfg, name).champion, shadow_state(cfg, name)
    lines = [f"{name}: champion v{champion or '-'}; " + (
        f"v{state.version} in shadow since {state.started} (role {state.role}, judged against v{state.against})"
        if state else "nothing in shadow")]
    records = quality_run(cfg, name, SHADOW_NIGHT_TAG)[1]
    if records:
        newest = max(records)
        lines += [f"newest live comparison (night {newest}):"]
        lines += [f"  {row['']}: {row['live']}" for row in LiveComparison.model_validate_json(records[newest]).table()]
    return "\n".join(lines)


def _start(cfg, name: str, version: str, reason: str, server_url, token: str | None) -> str:
    from nightshift.errors import NightshiftError
    from tasks.registry.shadow import dropped_before, start_shadow
    from tasks.registry.versions import alias_state, get_version

    champion = alias_state(cfg, name).champion
    get_version(cfg, name, version)  # fails naming the model and version when there is no such version
    if champion is None:
        raise NightshiftError(f"model '{name}' has no champion: a shadow is judged against one")
    if str(version) == champion:
        raise NightshiftError(f"v{version} is the champion of '{name}': shadow another version")
    if why := dropped_before(cfg, name, version):
        raise NightshiftError(f"v{version} of '{name}' was dropped from shadow before: {why}")
    return start_shadow(cfg, name, str(version), champion, datetime.now(UTC).date(), "challenger", reason,
                        server_url=server_url, token=token)


def _stop(cfg, name: str, reason: str, server_url, token: str | None) -> str:
    from nightshift.errors import NightshiftError
    from tasks.registry.shadow import end_shadow, shadow_state

    state = shadow_state(cfg, name)
    if state is None:
        raise NightshiftError(f"model '{name}' has nothing in shadow")
    return f"v{state.version} out of shadow: " + end_shadow(cfg, name, state, "shadow-end", reason,
                                                           server_url=server_url, token=token)


if __name__ == "__main__":
    sys.exit(main())
