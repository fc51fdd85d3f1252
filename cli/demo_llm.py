"""`make demo-llm`: prompt + model candidates for support-ticket triage evaluated, gated and promoted, offline.

Two stand-in models (cli/demo_tickets.py) answer through an OpenAI-compatible server on loopback
(cli/fake_openai.py), called with the real `openai` client: `fake-small` (cheap) and `fake-large` (~16x the
price). Three evaluation runs of the `llm-eval` flow on the bundled 40 tickets: the small model with a plain prompt
becomes the first champion; the same model with priority rules in its prompt beats it; the large model is refused
(not measurably better than the improved prompt, and over the cost budget). A stand-in judge (`fake-judge`) grades
every reply beside the exact-match scores (partial credit for a right category), and the champion's stored results
are reused instead of calling it again. The registry's `champion`/`previous`
aliases and the audit trail are the same as for scikit-learn models, so `python -m flows.rollback` undoes a step.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

SYSTEM = 'You triage customer support tickets. Reply with JSON only: {"category": ..., "priority": ...}.'
RULES = SYSTEM + (" Priority rules: high when money is lost, an account is locked or nothing works; low for "
                  "questions and wishes; medium otherwise.")


HIDDEN = {"temperature", "retries", "judge errors"}  # the demo's table fits 160 columns
CACHE = {"hit": "champion: its stored results reused, nothing sent for it", "none": "no champion yet",
         "miss": "champion: run again, its results stored for next time"}


def _candidate(model: str, system: str) -> dict[str, object]:
    return {"model": model, "system": system, "template": "Ticket: {{ ticket }}", "response_format": "json_object"}


def main(argv: list[str] | None = None) -> int:
    """Start the stand-in provider, run the three evaluations, print each table and decision; an exit code."""
    parser = argparse.ArgumentParser(prog="python -m cli.demo_llm", description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-name", default=None, help="registered prompt (default: a fresh triage-<id>)")
    args = parser.parse_args(argv)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
    from nightshift.settings import apply_prefect_defaults, get_settings

    apply_prefect_defaults(get_settings())
    from rich.console import Console
    from rich.table import Table

    from cli.demo_tickets import ticket_answers
    from cli.fake_openai import FakeOpenAI
    from flows.llm_eval import LLMEvalParams, llm_eval

    fake = FakeOpenAI(answers=ticket_answers())
    url, stop = fake.start()
    os.environ.update(OPENAI_BASE_URL=url, OPENAI_API_KEY=f"demo-{uuid.uuid4().hex}", NO_PROXY="127.0.0.1,localhost")
    name = args.prompt_name or f"triage-{uuid.uuid4().hex[:6]}"
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.rule(f"[bold]nightshift LLM demo: prompt '{name}', stand-in provider at {url}")
    runs = [("a first champion", [_candidate("fake-small", SYSTEM)]),
            ("priority rules in the prompt", [_candidate("fake-small", RULES)]),
            ("a bigger model", [_candidate("fake-large", SYSTEM), _candidate("fake-large", RULES)])]
    started = time.perf_counter()
    try:
        for label, candidates in runs:
            result = llm_eval(LLMEvalParams(prompt_name=name, candidates=candidates, judge={"model": "fake-judge"},
                                            gate={"absolute_floor": 0.55, "max_cost_increase": 1.0}))
            table = Table(title=f"{label}: {len(result.candidates)} configuration(s) on 40 tickets")
            rows = [{k: v for k, v in c.row().items() if k not in HIDDEN} for c in result.candidates]
            for column in rows[0]:
                table.add_column(column)
            for row, c in zip(rows, result.candidates):
                is_live = c is result.candidates[-1] and result.champion_before and len(rows) > len(candidates)
                table.add_row(*[f"{v} (champion)" if k == "model" and is_live else v for k, v in row.items()])
            console.print(table)
            decision = result.decision.reason if result.decision else "the champion's own content"
            cache = CACHE.get(result.champion_cache, result.champion_cache)
            console.print(f"→ v{result.challenger_version}: [bold]{result.action}[/bold] ({decision}); champion "
                          f"{result.champion_before or '-'} → {result.champion_after or '-'}")
            console.print(f"  {cache}; USD {result.spent_usd:.5f} sent to the provider, the judge's included\n")
    finally:
        stop()
    console.print(f"Audit trail: .venv/bin/python -m cli.audit --model-name {name}")
    console.print(f"Roll back:   .venv/bin/python -m flows.rollback 'why' --model-name {name}")
    console.print(f"Wall time: {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
