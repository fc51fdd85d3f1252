"""Chat capture: one record per chat request (what answered, tokens, cost, latency, outcome), written beside the
prompt's folder of the capture dir by the scoring capture's own writer (serving/capture.py: bounded queue, a
background thread, parts written as `.inprogress`, closed, fsync'd and renamed), so a request never waits for it.

    {NIGHTSHIFT_CAPTURE_DIR}/{prompt}/chat/{YYYY-MM-DD}/part-{opened}-{pid}-{seq}.parquet

Columns: captured_at (UTC, when the request arrived), request_id, prompt, prompt_version, provider_model, status
(the HTTP status answered), outcome ("ok" or the reply's error_code), prompt_tokens, completion_tokens, cost_usd
(null when unpriced or failed), latency_ms (the provider call, retries included; null when none was made), queued_ms
(wait for a provider slot), retries, provider_status, finish_reason, error (the reply's message, which never quotes
variable values). With NIGHTSHIFT_SERVER_CAPTURE_CHAT_TEXT also `variables` (JSON) and `text` (the answer). Every
chat request on a served prompt is recorded (no sampling: one small row each); `read_chat_capture` reads them back.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.capture import Capture, CaptureConfig
from tasks.data.served import model_dir

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from serving.chat import ChatResponse


log = logging.getLogger(__name__)
FOLDER = "chat"  # {root}/{prompt}/chat/{day}/: beside the served name's own folder, out of the scoring reader's way
ERROR_CHARS = 500
TEXT_COLUMNS = ("variables", "text")


def _schema(text: bool) -> pa.Schema:
    import pyarrow as pa

    fields = [("captured_at", pa.timestamp("us", tz="UTC")), ("request_id", pa.string()), ("prompt", pa.string()),
              ("prompt_version", pa.string()), ("provider_model", pa.string()), ("status", pa.int32()),
              ("outcome", pa.string()), ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()),
              ("cost_usd", pa.float64()), ("latency_ms", pa.float64()), ("queued_ms", pa.float64()),
              ("retries", pa.int32()), ("provider_status", pa.int32()), ("finish_reason", pa.string()),
              ("error", pa.string())]
    return pa.schema(fields + [(name, pa.string()) for name in TEXT_COLUMNS] if text else fields)


def chat_tables(group: list[tuple[Any, ...]]) -> list[tuple[pa.Table | None, int, str | None]]:
    """Queued chat records (the record dict is an item's features) as one table; one per record if that fails."""
    import pyarrow as pa

    try:
        records = [{**item[4], "captured_at": int(item[3] * 1e6)} for item in group]
        return [(pa.Table.from_pylist(records, schema=_schema(TEXT_COLUMNS[0] in records[0])), len(group), None)]
    except Exception as exc:
        if len(group) == 1:
            return [(None, 1, f"{type(exc).__name__}: {str(exc)[:300]}")]
    return [result for item in group for result in chat_tables([item])]


class ChatCapture:
    """Offers one record per chat request to a Capture writing under `{prompt}/chat/`; never blocks or raises."""

    def __init__(self, config: CaptureConfig, text: bool = False) -> None:
        self.text = text
        self.capture = Capture(config.model_copy(update={"sample_rate": 1.0}), folder=FOLDER, to_tables=chat_tables)
        self._lock = threading.Lock()
        self._failed: dict[str, int] = {}  # records that could not even be built, by prompt

    def offer(self, prompt: str, request_id: str, at: float, status: int, outcome: str, *, version: str | None,
              provider_model: str | None, reply: ChatResponse | None = None, error: Exception | None = None,
              variables: dict[str, Any] | None = None) -> bool:
        """Queue the record of one answered chat request (True), or count it as dropped or failed (False)."""
        try:
            record: dict[str, Any] = {
                "request_id": request_id, "prompt": prompt, "prompt_version": version, "status": status,
                "outcome": outcome, "provider_model": reply.model if reply is not None else provider_model,
                "prompt_tokens": None, "completion_tokens": None, "cost_usd": None, "retries": None,
                "latency_ms": getattr(error, "latency_ms", None), "queued_ms": getattr(error, "queued_ms", None),
                "provider_status": None, "finish_reason": None,
                "error": str(error)[:ERROR_CHARS] if error is not None else None}
            if reply is not None:
                record.update(prompt_tokens=reply.usage.prompt_tokens, completion_tokens=reply.usage.completion_tokens,
                              cost_usd=reply.cost_usd, latency_ms=reply.latency_ms, queued_ms=reply.queued_ms,
                              retries=reply.retries, provider_status=200, finish_reason=reply.finish_reason)
            elif error is not None:
                extra = getattr(error, "extra", {})
                record.update(retries=getattr(error, "retries", None), provider_status=extra.get("provider_status"))
            if self.text:
                record["variables"] = (json.dumps(variables, ensure_ascii=False, default=str)
                                       if variables is not None else None)
                record["text"] = reply.text if reply is not None else None
            return self.capture.offer(prompt, version or "", request_id, record, (outcome,), at=at)
        except Exception as exc:  # never into the reply: counted as a write error of this prompt, and logged
            with self._lock:
                self._failed[prompt] = self._failed.get(prompt, 0) + 1
            log.error("chat capture: request %s of prompt %r not recorded: %s: %s", request_id, prompt,
                      type(exc).__name__, str(exc)[:300])
            return False

    def stats(self) -> dict[str, dict[str, int]]:
        """The writer's counters per prompt (records as rows), records that failed before the queue included."""
        stats = self.capture.stats()
        with self._lock:
            failed = dict(self._failed)
        for prompt, n in failed.items():
            counts = stats.setdefault(prompt, dict.fromkeys(("offered_rows", "error_rows", "write_errors"), 0))
            for key in ("offered_rows", "error_rows", "write_errors"):
                counts[key] = counts.get(key, 0) + n
        return stats

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Write every record offered so far into closed parts."""
        return self.capture.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what is queued, close every part; later records are dropped."""
        self.capture.close(timeout)


def chat_parts(root: Path | str, prompt: str, day: str | None = None) -> list[Path]:
    """The closed chat parts of a prompt (one UTC day, YYYY-MM-DD, or all), oldest first."""
    folder = Path(root) / model_dir(prompt) / FOLDER
    return sorted(folder.glob(f"{day or '*'}/part-*.parquet"), key=lambda p: (p.parent.name, p.name))


def read_chat_capture(root: Path | str, prompt: str, day: str | None = None) -> pd.DataFrame:
    """A prompt's chat records (closed parts only; one UTC day or all), oldest first; empty when there are none."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = chat_parts(root, prompt, day)
    if not parts:
        return _schema(False).empty_table().to_pandas()
    frame = pa.concat_tables([pq.read_table(p) for p in parts], promote_options="permissive").to_pandas()
    return frame.sort_values("captured_at", kind="stable").reset_index(drop=True)
