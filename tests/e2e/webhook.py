"""Run the test webhook (``webhook_server.py``) as a process and read what it saw."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from . import cluster, tls

SERVER_SCRIPT = Path(__file__).with_name("webhook_server.py")


class WebhookProcess:
    """A running webhook server; its stdout (one JSON line per review) is collected by a thread."""

    def __init__(self, proc: subprocess.Popen[str], log_file: Path) -> None:
        self._proc = proc
        self.log_file = log_file
        self._lines: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                entry = json.loads(line)
                with self._lock:
                    self._lines.append(entry)

    def _entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._lines)

    def wait_listening(self, timeout: float = 30) -> str:
        """Block until the server says it listens; return its ``host:port``."""

        def listening() -> str | None:
            if self._proc.poll() is not None:
                log = self.log_file.read_text()[-2000:]
                raise RuntimeError(f"webhook server exited with {self._proc.returncode}; its stderr:\n{log}")
            return next((e["listening"] for e in self._entries() if "listening" in e), None)

        address: str = cluster.poll(listening, timeout=timeout, what="the test webhook to listen")
        return address

    def reviews(self) -> list[dict[str, Any]]:
        """The AdmissionReview requests received so far, as the server summarised them."""
        return [e for e in self._entries() if "uid" in e]

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout=10)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


@contextlib.contextmanager
def run_webhook(
    cert: tls.ServingCert,
    host: str,
    port: int,
    label: str,
    wrap: Callable[[Sequence[str]], list[str]] = list,
) -> Iterator[WebhookProcess]:
    """Start the webhook listening on ``host:port`` (0 picks a free port); ``wrap`` can place it in a netns.

    Its stderr (access log, tracebacks) goes to ``webhook.log`` beside the certificate.
    """
    argv = [
        sys.executable,
        str(SERVER_SCRIPT),
        "--cert",
        str(cert.cert_file),
        "--key",
        str(cert.key_file),
        "--host",
        host,
        "--port",
        str(port),
        "--label",
        label,
    ]
    log_file = cert.cert_file.with_name("webhook.log")
    with log_file.open("w") as log:
        proc = subprocess.Popen(wrap(argv), stdout=subprocess.PIPE, stderr=log, text=True)
    webhook = WebhookProcess(proc, log_file)
    try:
        yield webhook
    finally:
        webhook.stop()
