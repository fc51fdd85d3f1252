"""Notifications: Prefect automations that tell a person what a night did, through one notification block.

`make deploy` (and this module) create one automation per kind of news, each a reactive event trigger with threshold
1 (one message per event, never batched across models): a night (a `model-night` or `nightly` flow run) ending
Failed, Crashed or TimedOut, and each event in `nightshift.events.NOTIFY` (data missing, live model below its floor,
suspect labels, an estimated drop, every promotion and rollback). They send through the Prefect notification block
named by NIGHTSHIFT_NOTIFY_BLOCK (`<block-type-slug>/<block-name>`); with the setting empty or no such block on the
server, notifications are off and the automations are removed. Automations are matched by name, so deploying again
updates them in place.

`python -m deployments.notify --webhook-url URL` saves a Custom Webhook block (the URL kept as a block secret, never
in the repo; a Slack-compatible `{"text": ...}` body) and creates the automations, in one command.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from nightshift.events import (
    APPROVAL_WANTED,
    BELOW_FLOOR,
    DATA_MISSING,
    ESTIMATED_DROP,
    LABELS_SUSPECT,
    NOTIFY,
    PROMOTED,
    ROLLED_BACK,
    SHADOW_DISAGREES,
)
from nightshift.settings import Settings, get_settings

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.client.orchestration import SyncPrefectClient
    from prefect.events.schemas.automations import AutomationCore

PREFIX = "nightshift-notify-"  # every notification automation's name starts so (others are never touched)
DEFAULT_BLOCK_TYPE = "custom-webhook"  # a bare block name in NIGHTSHIFT_NOTIFY_BLOCK
NIGHT_FLOWS = ("model-night", "nightly")
NIGHT_ENDINGS = ("Failed", "Crashed", "TimedOut")  # TimedOut: a Failed-type state with its own event name
# What each event is, in a message's subject, and its automation's name.
HEADLINES = {DATA_MISSING: "no data tonight", BELOW_FLOOR: "live model below its floor",
             LABELS_SUSPECT: "suspect labels kept out", ESTIMATED_DROP: "estimated performance drop",
             PROMOTED: "promoted", ROLLED_BACK: "rolled back", APPROVAL_WANTED: "a close call waits for you",
             SHADOW_DISAGREES: "live traffic disagrees with the gate"}
NAMES = {DATA_MISSING: "data-missing", BELOW_FLOOR: "below-floor", LABELS_SUSPECT: "labels-suspect",
         ESTIMATED_DROP: "estimated-drop", PROMOTED: "promoted", ROLLED_BACK: "rolled-back",
         APPROVAL_WANTED: "approval-wanted", SHADOW_DISAGREES: "shadow-disagrees"}
NIGHT_FAILED = f"{PREFIX}night-failed"


def _run_url(ui_base: str) -> str:
    """The flow run's UI page: the server's own UI URL when it knows one (PREFECT_UI_URL), else the UI of the API
    `make deploy` talked to. The flow run is the event's resource, or the related run that emitted it."""
    if "'" in ui_base or "{" in ui_base:
        raise ValueError(f"unexpected characters in the UI URL {ui_base!r}")
    return ("{{ (flow_run|ui_url or '" + ui_base.rstrip("/") + "/runs/flow-run/' ~ flow_run.id) if flow_run "
            "else 'none (emitted outside a flow run)' }}")


def event_message(event: str, ui_base: str) -> tuple[str, str]:
    """Subject and body templates for a nightshift event (its payload always has model, night and reason)."""
    subject = "nightshift: {{ event.payload.model }}: " + HEADLINES[event]
    body = ("model: {{ event.payload.model }}{% if event.resource.get('nightshift.model.version') %}"
            " (v{{ event.resource.get('nightshift.model.version') }}){% endif %}\n"
            "night: {{ event.payload.night or 'not given' }}\n"
            "reason: {{ event.payload.reason }}\n"
            "{% if event.payload.to_version or event.payload.from_version %}versions: "
            "{{ 'v' ~ event.payload.from_version if event.payload.from_version else 'none' }} -> "
            "{{ 'v' ~ event.payload.to_version if event.payload.to_version else 'none' }}\n{% endif %}"
            f"run: {_run_url(ui_base)}\n"
            "event: {{ event.event }} at {{ event.occurred.isoformat() }}")
    return subject, body


def night_failed_message(ui_base: str) -> tuple[str, str]:
    """Subject and body templates for a night's flow run ending Failed/Crashed (model and night from its
    parameters: a scheduled model-night resolves its night from the scheduled start, so that is named instead)."""
    subject = ("nightshift: {{ flow_run.parameters.params.model_name or 'the default model' }}: night "
               "{{ event.resource.get('prefect.state-name') }}")
    body = ("model: {{ flow_run.parameters.params.model_name or 'the default model (NIGHTSHIFT_MODEL_NAME)' }}\n"
            "night: {{ flow_run.parameters.params.night or 'not given, scheduled start ' ~ "
            "flow_run.expected_start_time }}\n"
            "reason: {{ event.payload.validated_state.message or flow_run.state.message or 'no message' }}\n"
            f"run: {_run_url(ui_base)}\n"
            "flow run: {{ flow.name }}/{{ flow_run.name }} ended {{ event.resource.get('prefect.state-name') }} "
            "at {{ event.occurred.isoformat() }}")
    return subject, body


def notification_automations(block_document_id: UUID, ui_base: str) -> list[AutomationCore]:
    """The automations, built without the API (names, triggers, messages): the failed night, then one per event."""
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    def automation(name: str, description: str, trigger: EventTrigger, message: tuple[str, str]) -> AutomationCore:
        subject, body = message
        return AutomationCore(name=name, description=f"{description} (made by make deploy; edits are replaced)",
                              enabled=True, trigger=trigger,
                              actions=[SendNotification(block_document_id=block_document_id, subject=subject,
                                                        body=body)])

    failed = automation(
        NIGHT_FAILED, f"Tell a person when a night ({', '.join(NIGHT_FLOWS)} flow run) ends "
                      f"{', '.join(NIGHT_ENDINGS)}.",
        EventTrigger(expect={f"prefect.flow-run.{state}" for state in NIGHT_ENDINGS},
                     match={"prefect.resource.id": "prefect.flow-run.*"},
                     match_related={"prefect.resource.role": "flow", "prefect.resource.name": list(NIGHT_FLOWS)},
                     posture=Posture.Reactive, threshold=1, within=0),
        night_failed_message(ui_base))
    return [failed, *(automation(
        f"{PREFIX}{NAMES[event]}", f"Tell a person about every {event} event ({HEADLINES[event]}).",
        EventTrigger(expect={event}, match={"prefect.resource.id": "nightshift.model.*"},
                     posture=Posture.Reactive, threshold=1, within=0),
        event_message(event, ui_base)) for event in NOTIFY)]


def block_reference(value: str | None) -> tuple[str, str] | None:
    """NIGHTSHIFT_NOTIFY_BLOCK as (block type slug, block name); None when empty (notifications off)."""
    value = (value or "").strip()
    if not value:
        return None
    slug, _, name = value.rpartition("/")
    return slug or DEFAULT_BLOCK_TYPE, name


def find_block(client: SyncPrefectClient, reference: tuple[str, str]) -> tuple[UUID | None, str]:
    """The notification block's document id, or None and why not."""
    from prefect.exceptions import ObjectNotFound

    slug, name = reference
    try:
        document = client.read_block_document_by_name(name, slug, include_secrets=False)
    except ObjectNotFound:
        return None, (f"no notification block '{slug}/{name}' on the server (create one: python -m "
                      "deployments.notify --webhook-url URL, or set NIGHTSHIFT_NOTIFY_BLOCK)")
    if "notify" not in (document.block_schema.capabilities if document.block_schema else []):
        return None, f"block '{slug}/{name}' is not a notification block"
    return document.id, f"block '{slug}/{name}'"


def sync_automations(client: SyncPrefectClient, wanted: list[AutomationCore]) -> dict[str, list[str]]:
    """Make the server's `nightshift-notify-*` automations exactly `wanted`: update by name, create the missing,
    delete duplicates and ones no longer wanted."""
    existing: dict[str, list[Any]] = {}
    for automation in client.read_automations():
        if automation.name.startswith(PREFIX):
            existing.setdefault(automation.name, []).append(automation)
    done: dict[str, list[str]] = {"created": [], "updated": [], "deleted": []}
    for spec in wanted:
        current = existing.pop(spec.name, [])
        if current:
            client.update_automation(current[0].id, spec)
            done["updated"].append(spec.name)
        else:
            client.create_automation(spec)
            done["created"].append(spec.name)
        for duplicate in current[1:]:
            client.delete_automation(duplicate.id)
    for stale in existing.values():
        for automation in stale:
            client.delete_automation(automation.id)
            done["deleted"].append(automation.name)
    return done


def configure_notifications(settings: Settings | None = None) -> str:
    """Create or update the notification automations (or remove them when notifications are off); one line saying
    what happened."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_UI_URL

    settings = settings or get_settings()
    reference = block_reference(settings.notify_block)
    with get_client(sync_client=True) as client:
        block_id, why = find_block(client, reference) if reference else (None, "NIGHTSHIFT_NOTIFY_BLOCK is empty")
        ui_base = PREFECT_UI_URL.value() or str(client.api_url).removesuffix("/api").removesuffix("/api/")
        done = sync_automations(client, notification_automations(block_id, ui_base) if block_id else [])
    if block_id is None:
        removed = f"; removed {', '.join(done['deleted'])}" if done["deleted"] else ""
        return f"notifications off: {why}{removed}"
    changed = ", ".join(f"{k} {len(v)}" for k, v in done.items() if v)
    return f"notifications on through {why}: {len(done['created']) + len(done['updated'])} automations ({changed})"


def save_webhook_block(url: str, name: str) -> UUID:
    """A Custom Webhook notification block posting `{"text": subject + body}` (Slack, Mattermost and most chat
    webhooks take it) to `url`; the URL is stored as the block's secret, so the UI and the API show it masked."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(name=name, url="{{webhook_url}}", secrets={"webhook_url": url},
                                           json_data={"text": "{{subject}}\n{{body}}"})
    return block.save(name, overwrite=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.notify", description=__doc__.splitlines()[0])
    parser.add_argument("--webhook-url", help="the webhook to post to ('-': read it from stdin, out of your shell "
                                              "history); kept only in the Prefect server's block")
    parser.add_argument("--name", help="block name (default: the one NIGHTSHIFT_NOTIFY_BLOCK names, "
                                       "nightshift-alerts)")
    parser.add_argument("--test", action="store_true", help="send one test message through the block")
    args = parser.parse_args(argv)
    if "PREFECT_API_URL" not in os.environ:
        sys.exit("PREFECT_API_URL is not set: start `make server` and point PREFECT_API_URL at it "
                 "(http://127.0.0.1:4200/api).")
    settings = get_settings()
    configured = block_reference(settings.notify_block)
    if args.webhook_url:
        url = sys.stdin.readline().strip() if args.webhook_url == "-" else args.webhook_url
        name = args.name or (configured[1] if configured and configured[0] == DEFAULT_BLOCK_TYPE else
                             "nightshift-alerts")
        save_webhook_block(url, name)
        print(f"saved notification block '{DEFAULT_BLOCK_TYPE}/{name}'")
        if configured != (DEFAULT_BLOCK_TYPE, name):
            settings = settings.model_copy(update={"notify_block": f"{DEFAULT_BLOCK_TYPE}/{name}"})
            print(f"set NIGHTSHIFT_NOTIFY_BLOCK={DEFAULT_BLOCK_TYPE}/{name} for make deploy, or it turns these "
                  "notifications off again")
    print(configure_notifications(settings))
    if args.test:
        _send_test(settings)
    return 0


def _send_test(settings: Settings) -> None:
    from prefect.blocks.core import Block

    reference = block_reference(settings.notify_block)
    if reference is None:
        sys.exit("no notification block configured (NIGHTSHIFT_NOTIFY_BLOCK is empty)")
    Block.load("/".join(reference)).notify("notifications are set up for this Prefect server.",
                                           subject="nightshift: test message")
    print("sent a test message")


if __name__ == "__main__":
    sys.exit(main())
