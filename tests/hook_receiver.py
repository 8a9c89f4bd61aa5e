"""A real webhook receiver on 127.0.0.1 for the tests (and bench/hooks.py): a threading
``http.server`` that verifies every delivery's signature as docs/hooks.md tells receivers to.

``Receiver(secret)`` listens at ``.url``; ``.plan`` is a list of what to do with the next
requests (``500``: answer 500; ``"hang"``: wait ``hang_s`` before answering; ``302``: a
redirect to ``redirect_to``), then every request is answered 200. ``.received`` holds what
came: headers, the parsed body, and whether the signature was valid and fresh.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["Delivery", "Receiver", "verify"]


def verify(secret: str, headers: Any, body: bytes, tolerance_s: int = 300) -> bool:
    """docs/hooks.md's receiver check: the HMAC-SHA256 of ``"<timestamp>.<body>"`` with the
    subscription's secret equals the signature header, and the timestamp is recent."""
    timestamp = headers.get("X-Keel-Timestamp", "")
    signature = headers.get("X-Keel-Signature", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance_s:
        return False
    expected = "v1=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


@dataclass
class Delivery:
    headers: dict[str, str]
    body: dict[str, Any]
    verified: bool
    at: float

    @property
    def event_id(self) -> int:
        return int(self.body["event"]["id"])

    @property
    def kind(self) -> str:
        return str(self.body["event"]["kind"])


class Receiver:
    """A webhook receiver on 127.0.0.1 (see the module doc). Use as a context manager."""

    def __init__(self, secret: str = "", *, path: str = "/hook") -> None:
        self.secret = secret
        self.plan: list[Any] = []
        self.hang_s = 5.0
        self.delay_s = 0.0  # every answer waits this long (a slow receiver)
        self.redirect_to = ""
        self.received: list[Delivery] = []
        self.raw: list[bytes] = []  # the bodies as they came, byte for byte
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    action = receiver.plan.pop(0) if receiver.plan else 200
                    verified = verify(receiver.secret, self.headers, body)
                    receiver.received.append(Delivery(dict(self.headers), json.loads(body), verified, time.time()))
                    receiver.raw.append(body)
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                if action == "hang":
                    time.sleep(receiver.hang_s)
                    action = 200
                answer = b"ok" if action == 200 else b"not now"
                self.send_response(int(action))
                if action == 302:
                    self.send_header("Location", receiver.redirect_to)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Delivery]:
        """The deliveries received, once there are ``count`` (AssertionError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"{len(self.received)} of {count} deliveries arrived within {timeout} s")
