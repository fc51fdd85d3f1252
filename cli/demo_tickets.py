"""The offline LLM demo's world: two stand-in models answering the bundled support-ticket set, deterministically.

`fake-small` is cheap and gets the category right but often misjudges the priority unless the system prompt spells
out the priority rules; `fake-large` is right almost always, at about 16x the price; `fake-judge` grades a reply by
the share of the expected fields it matches. Served by cli/fake_openai.py so the demo, the tests and the
evaluation flow run with the real `openai` client and no internet.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.fake_openai import JUDGE_MODEL, judge_reply
from nightshift.settings import PROJECT_ROOT


TICKETS = PROJECT_ROOT / "evalsets" / "support_tickets.jsonl"
PRIORITY_RULES = "priority rules"  # a system prompt containing this helps fake-small with priorities
PRIORITIES = ("low", "medium", "high")


def _bucket(text: str) -> int:
    """A stable number 0-99 for a ticket text."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 100


def ticket_answers(path: Path = TICKETS) -> dict[str, Callable[[list[dict[str, Any]]], str]]:
    """Answer functions by model name for FakeOpenAI: a JSON reply for the ticket in the last user message."""
    expected = {}
    for line in path.read_text().splitlines():
        if line.strip():
            item = json.loads(line)
            expected[item["ticket"]] = item["expected"]

    def answer(model: str) -> Callable[[list[dict[str, Any]]], str]:
        def reply(messages: list[dict[str, Any]]) -> str:
            user = messages[-1]["content"]
            ticket = next((t for t in expected if t in user), None)
            if ticket is None:
                return "I'm sorry, I cannot help with that."
            right = dict(expected[ticket])
            rules = any(PRIORITY_RULES in m["content"].lower() for m in messages if m["role"] == "system")
            miss = 5 if model == "fake-large" else (8 if rules else 35)  # % of tickets it gets wrong
            if _bucket(ticket + model) < miss:  # a wrong priority: the next one round
                right["priority"] = PRIORITIES[(PRIORITIES.index(right["priority"]) + 1) % 3]
            return json.dumps(right)

        return reply

    return {**{model: answer(model) for model in ("fake-small", "fake-large")}, JUDGE_MODEL: judge_reply}
