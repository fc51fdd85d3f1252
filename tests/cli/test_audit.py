"""`python -m cli.audit`: the audit trail as a table or JSON lines, one model or all."""

from __future__ import annotations

import json

from cli.audit import main
from tasks.registry.audit import AuditRecord, append_audit


def test_prints_one_models_trail_as_json_and_as_a_table(tracking, model_name, capsys) -> None:
    for i, action in enumerate(("promote", "refuse")):
        append_audit(tracking, AuditRecord(time=f"2026112{i}T010203.000000Z", model_name=model_name,
                                                 action=action, from_version="1", to_version="2", reason=f"r{i}"))
    append_audit(tracking, AuditRecord(time="20261120T000000.000000Z", model_name=f"{model_name}-other",
                                             action="promote", to_version="1", reason="another model"))
    assert main(["--model-name", model_name, "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["action"], r["reason"]) for r in lines] == [("promote", "r0"), ("refuse", "r1")]
    assert main(["--model-name", model_name]) == 0
    table = capsys.readouterr().out
    assert "2 records" in table and "refuse" in table and "another model" not in table
