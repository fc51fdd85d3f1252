"""`python -m cli.labels`: labeled days whose labels looked wrong (kept out of training and judging), and clearing
them once a person has looked: `list MODEL`, `clear MODEL DAY --by NAME --reason WHY`."""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import date


def main(argv: list[str] | None = None) -> int:
    """List a model's suspect labels, or clear one day's; exit 2 with a sentence when there is nothing to clear."""
    parser = argparse.ArgumentParser(prog="python -m cli.labels", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="every day whose labels were suspect, and who cleared them")
    listing.add_argument("model")
    clear = sub.add_parser("clear", help="let the next night measure, train and judge on a day's suspect labels")
    clear.add_argument("model")
    clear.add_argument("day", type=date.fromisoformat, help="YYYY-MM-DD: the labeled day")
    clear.add_argument("--by", default=None, help="who looked at them (default: your login name)")
    clear.add_argument("--reason", required=True, help="why they are right after all (kept with the record)")
    args = parser.parse_args(argv)

    from nightshift.errors import NightshiftError
    from nightshift.settings import get_settings
    from tasks.registry.labels import suspect_records
    from tasks.registry.quality import clear_suspect_labels, quality_run
    from tasks.registry.store import TrackingConfig

    cfg = TrackingConfig.from_settings(get_settings())
    if args.command == "list":
        records = suspect_records(quality_run(cfg, args.model, "")[1])
        for day in sorted(records):
            print(records[day].describe())
        if not records:
            print(f"no suspect labels on record for '{args.model}'")
        return 0
    try:
        record = clear_suspect_labels(cfg, args.model, args.day, args.by or getpass.getuser(), args.reason)
    except NightshiftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"cleared: {record.describe()} ({record.cleared_reason}); the next night measures and trains on them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
