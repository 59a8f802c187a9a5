"""A real HTTP server on 127.0.0.1 for download tests, which can be told to misbehave.

It serves files from memory, honours ``Range: bytes=N-`` (unless told not to), and per
path can answer with an error status, or drop the connection or stall after part of the
body for the first few requests. Every request is recorded.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Behaviour:
    """How the server answers one path."""

    body: bytes = b""
    status: int | None = None  # answer with this status and no body...
    ranges: bool = True  # honour Range requests (False: always send the whole file)
    cut_after: int | None = None  # drop the connection after this many body bytes...
    stall_after: int | None = None  # ...or stop sending (for stall_seconds) after this many
    stall_seconds: float = 0.0
    faulty_requests: int = 1  # ...for this many requests (each fault), then behave


@dataclass
class Request:
    path: str
    range: str | None
    status: int


@dataclass
class LocalServer:
    port: int
    files: dict[str, Behaviour] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self, path: str, body: bytes, **behaviour) -> str:
        """Serve ``body`` at ``path``; return its URL."""
        self.files[path] = Behaviour(body=body, **behaviour)
        return self.url(path)


@contextmanager
def local_server() -> Iterator[LocalServer]:
    """Start a server on a free port of 127.0.0.1; stop it afterwards."""
    state = LocalServer(port=0)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
            path = self.path.split("?")[0]
            b = state.files.get(path)
            rng = self.headers.get("Range")
            with lock:
                faulty = b is not None and (
                    sum(r.path == path for r in state.requests) < b.faulty_requests)
            if b is None or (faulty and b.status is not None):
                status = 404 if b is None else b.status
                state.requests.append(Request(path, rng, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                return
            start = 0
            m = re.fullmatch(r"bytes=(\d+)-", rng or "")
            if b.ranges and m:
                start = int(m.group(1))
                if start >= len(b.body):
                    state.requests.append(Request(path, rng, 416))
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(b.body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            status = 206 if start else 200
            state.requests.append(Request(path, rng, status))
            payload = b.body[start:]
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            if start:
                self.send_header("Content-Range",
                                 f"bytes {start}-{len(b.body) - 1}/{len(b.body)}")
            self.send_header("Connection", "close")
            self.end_headers()
            if faulty and b.cut_after is not None:
                self.wfile.write(payload[: b.cut_after])
                self.wfile.flush()
                self.close_connection = True
                return
            if faulty and b.stall_after is not None:
                self.wfile.write(payload[: b.stall_after])
                self.wfile.flush()
                time.sleep(b.stall_seconds)
                self.close_connection = True
                return
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
