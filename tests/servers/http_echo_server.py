"""An HTTP server that keeps what it is sent, for `bindings.http`: a real endpoint on loopback.

`PUT /<path>` (or POST) stores the body under the path and answers it back; `GET /<path>`
answers what is stored (404 when nothing is); `DELETE /<path>` forgets it; every answer
has an `X-Echo-Method` header naming the method it got, and echoes `X-Request-Tag`.
"""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.servers.process import ServerProcess, accepts_connections, free_port, scratch_dir

_STORED: dict[str, bytes] = {}


class _Handler(BaseHTTPRequestHandler):
    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Echo-Method", self.command)
        if self.headers.get("X-Request-Tag"):
            self.send_header("X-Request-Tag", self.headers["X-Request-Tag"])
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _store(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _STORED[self.path] = body
        self._answer(201 if self.command == "PUT" else 200, body)

    do_POST = do_PUT = _store

    def do_GET(self) -> None:
        if self.path in _STORED:
            self._answer(200, _STORED[self.path])
        else:
            self._answer(404, b"not here: " + self.path.encode())

    def do_DELETE(self) -> None:
        _STORED.pop(self.path, None)
        self._answer(204, b"")

    def log_message(self, format: str, *args: object) -> None:
        pass


def start() -> ServerProcess:
    port = free_port()
    command = [sys.executable, "-m", "tests.servers.http_echo_server", str(port)]
    root = str(Path(__file__).resolve().parents[2])
    return ServerProcess(
        "http-echo", command, accepts_connections(port), scratch_dir("http-echo"), port, env={"PYTHONPATH": root}
    ).start()


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), _Handler).serve_forever()
