"""An OpenAI-compatible stand-in for offline tests and the offline demo: canned chat answers keyed by model and
messages, word-count `usage`, and injected faults (429 with Retry-After, 5xx, malformed JSON, slow replies).

Run `python -m cli.fake_openai --port 8765 --answers answers.jsonl` (then OPENAI_BASE_URL=http://127.0.0.1:8765/v1
and any non-empty OPENAI_API_KEY), or in-process: `url, stop = FakeOpenAI(answers={...}).start()`.
Answers file: JSON list or JSONL of {"model", "messages", "answer"} records; a record without "messages" is the
model's answer to anything. Control API (no auth): GET /_fake/requests, POST /_fake/faults {"key", "fault"},
DELETE /_fake/faults. `judge_reply` is a deterministic LLM judge, served as "fake-judge" by the command line and by
cli/demo_tickets.ticket_answers. Standard library only (ThreadingHTTPServer): nothing to install, quick to start and
stop.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal


Answer = Callable[[list[dict[str, Any]]], str]
FaultKind = Literal["status", "malformed", "slow", "not_json"]
ANY_MODEL = "*"
JSON = "application/json"


def message_key(model: str, messages: list[dict[str, Any]]) -> str:
    """The canned-answer key for a request: model plus a hash of its messages (role and content only)."""
    canon = json.dumps([{"role": m.get("role"), "content": m.get("content")} for m in messages],
                       sort_keys=True, ensure_ascii=False)
    return f"{model}:{hashlib.sha256(canon.encode()).hexdigest()[:16]}"


def count_tokens(text: str) -> int:
    """Deterministic stand-in for a tokenizer: whitespace-separated words."""
    return len(text.split())


@dataclass
class Fault:
    """What to do instead of (or before) answering, for matching requests."""

    kind: FaultKind = "status"
    status: int = 500  # for kind="status": 429, 500, 503, ...
    times: int | None = None  # fault this many matching requests, then answer normally; None = every one
    after: int = 0  # let this many matching requests through first (a provider going down mid-run)
    retry_after: float | None = None  # seconds, sent as Retry-After
    retry_after_ms: int | None = None  # sent as retry-after-ms (the SDK reads it first)
    delay: float = 0.0  # for kind="slow" (and before any other fault): seconds before replying
    seen: int = field(default=0, compare=False)

    def fires(self) -> bool:
        """Count one matching request; True when this one is faulted."""
        self.seen += 1
        if self.seen <= self.after:
            return False
        return self.times is None or self.seen - self.after <= self.times


@dataclass
class Recorded:
    """One request as the fake received it, minus the Authorization header."""

    path: str
    model: str | None
    messages: list[dict[str, Any]]
    body: dict[str, Any]
    headers: dict[str, str]
    authorized: bool  # a non-empty bearer token was sent
    retry_count: int  # the SDK's x-stainless-retry-count
    status: int = 0
    at: float = 0.0


class FakeOpenAI:
    """The fake's state: answers, faults, recorded requests and the in-flight high-water mark."""

    def __init__(self, answers: Mapping[str, Answer | str] | None = None, canned: Mapping[str, str] | None = None,
                 faults: Mapping[str, Fault] | None = None, default: Answer | str | None = None) -> None:
        """`answers` per model (a callable of the messages, or a fixed text), `canned` by `message_key`,
        `faults` by message_key, model or "*"; `default` answers a known-nowhere model instead of 404."""
        self.answers: dict[str, Answer | str] = dict(answers or {})
        self.canned: dict[str, str] = dict(canned or {})
        self.faults: dict[str, Fault] = dict(faults or {})
        self.default = default
        self.requests: list[Recorded] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.url: str | None = None  # set by start()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> FakeOpenAI:
        """A fake answering from a JSON list or JSONL file of {"model", "messages"?, "answer"} records."""
        text = Path(path).read_text()
        stripped = text.lstrip()
        records = json.loads(text) if stripped.startswith("[") else [
            json.loads(line) for line in text.splitlines() if line.strip()]
        answers: dict[str, Answer | str] = {}
        canned: dict[str, str] = {}
        for number, record in enumerate(records, start=1):
            if not isinstance(record, dict) or "model" not in record or "answer" not in record:
                raise ValueError(f"{path}: record {number} needs 'model' and 'answer' (and optionally 'messages')")
            if "messages" in record:
                canned[message_key(record["model"], record["messages"])] = str(record["answer"])
            else:
                answers[record["model"]] = str(record["answer"])
        return cls(answers=answers, canned=canned, **kwargs)

    @property
    def models(self) -> list[str]:
        """Every model the fake knows by name."""
        return sorted({k for k in self.answers if k != ANY_MODEL} | {k.rsplit(":", 1)[0] for k in self.canned})

    def set_fault(self, key: str, fault: Fault | None) -> None:
        """Fault requests matching `key` (a message_key, a model or "*"); None clears it."""
        with self._lock:
            if fault is None:
                self.faults.pop(key, None)
            else:
                self.faults[key] = fault

    def clear_faults(self) -> None:
        """Remove every fault."""
        with self._lock:
            self.faults.clear()

    def reset(self) -> None:
        """Forget faults, recorded requests and the in-flight high-water mark."""
        with self._lock:
            self.faults.clear()
            self.requests.clear()
            self.max_in_flight = 0

    def chat_requests(self, model: str | None = None) -> list[Recorded]:
        """Recorded chat-completion requests, optionally for one model."""
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")
                    and (model is None or r.model == model)]

    def answer(self, model: str, messages: list[dict[str, Any]]) -> str | None:
        """The canned reply for these messages, the model's, the "*" one or the default; None = unknown model."""
        if (text := self.canned.get(message_key(model, messages))) is not None:
            return text
        for found in (self.answers.get(model), self.answers.get(ANY_MODEL), self.default):
            if found is not None:
                return found(messages) if callable(found) else found
        return None

    def fault_for(self, model: str, messages: list[dict[str, Any]]) -> Fault | None:
        """The fault that fires for this request, if any (most specific key first)."""
        with self._lock:
            for key in (message_key(model, messages), model, ANY_MODEL):
                if (fault := self.faults.get(key)) is not None:
                    return fault if fault.fires() else None
        return None

    def snapshot(self) -> dict[str, Any]:
        """Recorded requests and the in-flight high-water mark, as JSON-able data."""
        with self._lock:
            return {"requests": [asdict(r) for r in self.requests], "max_in_flight": self.max_in_flight}

    def record(self, entry: Recorded) -> None:
        """Keep one request."""
        with self._lock:
            self.requests.append(entry)

    def enter(self) -> None:
        """One more chat request in flight."""
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        """One chat request done."""
        with self._lock:
            self.in_flight -= 1

    def sleep(self, seconds: float) -> None:
        """Wait, but wake at once when the server stops."""
        self._stopping.wait(seconds)

    def server(self, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
        """A bound (not yet serving) HTTP server for this fake."""
        fake = self

        class Handler(_Handler):
            pass

        Handler.fake = fake
        httpd = ThreadingHTTPServer((host, port), Handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False
        return httpd

    def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, Callable[[], None]]:
        """Serve in a background thread; returns the base URL (ending in /v1) and a stop function."""
        httpd = self.server(host, port)
        self._stopping.clear()
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                  name="fake-openai", daemon=True)
        thread.start()

        def stop() -> None:
            self._stopping.set()
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)

        bound_host, bound_port = httpd.server_address[:2]
        self.url = f"http://{bound_host}:{bound_port}/v1"
        return self.url, stop


JUDGE_MODEL = "fake-judge"


def _json_values(text: str) -> list[Any]:
    """Every top-level JSON object in `text`, in order (what a judge prompt embeds: input, expected, reply)."""
    decoder, found, at = json.JSONDecoder(), [], text.find("{")
    while at != -1:
        try:
            value, end = decoder.raw_decode(text, at)
        except ValueError:
            at = text.find("{", at + 1)
            continue
        found.append(value)
        at = text.find("{", end)
    return found


def judge_reply(messages: list[dict[str, Any]]) -> str:
    """A deterministic LLM judge: the last two JSON objects of the last user message are the expected answer and
    the reply; the score is the share of the expected answer's fields the reply matches (strings compared without
    case), as {"score": ..., "reason": ...}. Anything else scores 0, saying why."""
    found = _json_values(str(messages[-1].get("content") or "")) if messages else []
    if len(found) < 2 or not isinstance(found[-2], dict) or not found[-2]:
        return json.dumps({"score": 0, "reason": "no expected JSON answer and reply to compare"})
    expected, reply = found[-2], found[-1] if isinstance(found[-1], dict) else {}

    def same(a: Any, b: Any) -> bool:
        return a.strip().casefold() == b.strip().casefold() if isinstance(a, str) and isinstance(b, str) else a == b

    wrong = [f"{k}: {reply.get(k)!r} instead of {v!r}" for k, v in expected.items() if not same(reply.get(k), v)]
    score = round(1 - len(wrong) / len(expected), 4)
    return json.dumps({"score": score, "reason": "; ".join(wrong) or "every expected field matches"})


def completion_body(model: str, content: str, messages: list[dict[str, Any]], number: int) -> dict[str, Any]:
    """A chat.completion object as the real API returns it, with word-count usage."""
    prompt = sum(count_tokens(str(m.get("content") or "")) for m in messages)
    answer = count_tokens(content)
    return {"id": f"chatcmpl-fake-{number}", "object": "chat.completion", "created": int(time.time()), "model": model,
            "system_fingerprint": "fake",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content, "refusal": None}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": answer, "total_tokens": prompt + answer}}


def error_body(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    """An error object as the real API returns it."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 handler; `fake` is set on a per-server subclass."""

    protocol_version = "HTTP/1.1"
    fake: FakeOpenAI

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        """Quiet: tests read `fake.requests` instead."""

    def _send(self, status: int, body: Any, headers: Mapping[str, str] | None = None,
              content_type: str = JSON) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(raw)))
            self.send_header("x-request-id", f"req_fake_{len(self.fake.requests)}")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout path)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            return {}
        return body if isinstance(body, dict) else {}

    def _authorized(self) -> bool:
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and bool(token.strip())

    def _entry(self, body: dict[str, Any]) -> Recorded:
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"}
        try:
            retry_count = int(headers.get("x-stainless-retry-count", 0))
        except ValueError:
            retry_count = 0
        messages = body.get("messages") if isinstance(body.get("messages"), list) else []
        return Recorded(path=self.path, model=body.get("model"), messages=messages, body=body, headers=headers,
                        authorized=self._authorized(), retry_count=retry_count, at=time.time())

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        """GET /v1/models (authorized) and /_fake/requests."""
        if self.path.rstrip("/") == "/_fake/requests":
            self._send(200, self.fake.snapshot())
            return
        entry = self._entry({})
        self.fake.record(entry)
        if not entry.authorized:
            entry.status = 401
            self._send(401, error_body("You didn't provide an API key.", "invalid_request_error"))
        elif self.path.rstrip("/") == "/v1/models":
            entry.status = 200
            self._send(200, {"object": "list", "data": [{"id": m, "object": "model", "created": 0,
                                                         "owned_by": "fake"} for m in self.fake.models]})
        else:
            entry.status = 404
            self._send(404, error_body(f"Unknown path {self.path}", "invalid_request_error"))

    def do_DELETE(self) -> None:  # noqa: N802
        """DELETE /_fake/faults clears every fault."""
        if self.path.rstrip("/") == "/_fake/faults":
            self.fake.clear_faults()
            self._send(200, {"ok": True})
        else:
            self._send(404, error_body(f"Unknown path {self.path}", "invalid_request_error"))

    def do_POST(self) -> None:  # noqa: N802
        """POST /v1/chat/completions, and /_fake/faults {"key": model|message_key|"*", "fault": {...}|null}."""
        body = self._body()
        if self.path.rstrip("/") == "/_fake/faults":
            try:
                spec = body.get("fault")
                self.fake.set_fault(str(body["key"]), None if spec is None else Fault(**spec))
            except (KeyError, TypeError) as err:
                self._send(400, error_body(f"bad fault: {err}", "invalid_request_error"))
                return
            self._send(200, {"ok": True})
            return
        entry = self._entry(body)
        self.fake.record(entry)
        if not entry.authorized:
            entry.status = 401
            self._send(401, error_body("You didn't provide an API key. Send it as Authorization: Bearer <key>.",
                                       "invalid_request_error"))
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            entry.status = 404
            self._send(404, error_body(f"Unknown path {self.path}", "invalid_request_error"))
            return
        self.fake.enter()
        try:
            status, reply, headers, content_type = self._chat(entry)
        finally:
            self.fake.leave()  # before replying: a client's next request must not overlap this one's count
        entry.status = status  # before replying: the client may read the record as soon as it has the answer
        self._send(status, reply, headers, content_type)

    def _chat(self, entry: Recorded) -> tuple[int, Any, dict[str, str], str]:
        """The reply to one chat request: status, body, extra headers, content type."""
        model, messages = entry.model, entry.messages
        if not isinstance(model, str) or not messages:
            return 400, error_body("'model' and 'messages' are required.", "invalid_request_error"), {}, JSON
        fault = self.fake.fault_for(model, messages)
        if fault is not None:
            if fault.delay:
                self.fake.sleep(fault.delay)
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            if fault.retry_after_ms is not None:
                headers["retry-after-ms"] = str(fault.retry_after_ms)
            if fault.kind == "status":
                kind = "rate_limit_error" if fault.status == 429 else "server_error"
                return fault.status, error_body(f"injected HTTP {fault.status}", kind), headers, JSON
            if fault.kind == "malformed":
                return 200, b'{"id": "chatcmpl-broken", "choices": [', headers, JSON
            if fault.kind == "not_json":
                return 200, b"<html>gateway says hi</html>", headers, "text/html"
        text = self.fake.answer(model, messages)
        if text is None:
            return 404, error_body(f"The model `{model}` does not exist or you do not have access to it.",
                                   "invalid_request_error", "model_not_found"), {}, JSON
        return 200, completion_body(model, text, messages, len(self.fake.requests)), {}, JSON


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    parser.add_argument("--port", type=int, default=8765, help="port (0 = any free one)")
    parser.add_argument("--answers", type=Path, help="JSON/JSONL answers file; without it every model echoes")
    args = parser.parse_args(argv)
    echo: Answer = lambda messages: str(messages[-1].get("content") or "")  # noqa: E731
    fake = FakeOpenAI.from_file(args.answers) if args.answers else FakeOpenAI(default=echo)
    fake.answers.setdefault(JUDGE_MODEL, judge_reply)
    httpd = fake.server(args.host, args.port)
    host, port = httpd.server_address[:2]
    print(f"fake OpenAI API at http://{host}:{port}/v1 (models: {', '.join(fake.models) or 'any, echoing'})",
          flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


if __name__ == "__main__":
    main()
