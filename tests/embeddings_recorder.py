"""A tiny OpenAI-compatible embeddings server on 127.0.0.1 that records every request it gets.

Tests use it as the endpoint a server is configured with (it answers ``POST
.../embeddings`` with hashing vectors) and as the URL an attacker would name (then it
must have received nothing): ``requests`` holds each request's method, path, headers (lower-cased names) and body.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from keel.core.embedders import HashingEmbedder

__all__ = ["Recorder", "recording_server"]


@dataclass
class Recorder:
    """The server's address and what it received."""

    url: str  # http://127.0.0.1:PORT/v1
    dimension: int = 16
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.requests)


def _handler(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> dict[str, Any]:
            size = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(size) if size else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("latin-1")
            headers = {k.lower(): v for k, v in self.headers.items()}
            entry = {"method": self.command, "path": self.path, "headers": headers, "body": body}
            with recorder.lock:
                recorder.requests.append(entry)
            return entry

        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self._record()["body"]
            if not self.path.endswith("/embeddings") or not isinstance(body, dict):
                self._send(404, {"error": {"message": "not found"}})
                return
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            vectors = HashingEmbedder(recorder.dimension).embed(texts)
            data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
            tokens = 3 * len(texts)
            usage = {"prompt_tokens": tokens, "total_tokens": tokens}
            self._send(200, {"object": "list", "data": data, "model": body.get("model", ""), "usage": usage})

        def do_GET(self) -> None:  # noqa: N802
            self._record()
            self._send(404, {"error": {"message": "not found"}})

        do_PUT = do_DELETE = do_PATCH = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def recording_server() -> Iterator[Recorder]:
    """Serve on 127.0.0.1 (a free port) in a daemon thread until the block ends."""
    recorder = Recorder("")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(recorder))
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
