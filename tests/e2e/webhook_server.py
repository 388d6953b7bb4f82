"""A tiny mutating admission webhook, run as its own process by the e2e tests.

It proves the control plane really calls webhooks: the kube-apiserver sends an
AdmissionReview for every Pod created in the test namespace, this server answers
with a JSON patch that adds one label, and the test then finds the label on the
stored Pod. Each review is also printed as one JSON line on stdout, so a test
can show what the apiserver sent. It is a standalone script (standard library
only) because the tests start it inside a network namespace with ``ip netns
exec``, where it must not depend on the test process.

Usage: webhook_server.py --cert CERT --key KEY --host HOST --port PORT --label KEY=VALUE
"""

from __future__ import annotations

import argparse
import base64
import http.server
import json
import ssl
import sys
import urllib.parse
from typing import Any


def patch_for(pod: dict[str, Any], key: str, value: str) -> list[dict[str, Any]]:
    """JSON patch adding ``key: value`` to the pod's labels (creating the map if absent)."""
    if pod.get("metadata", {}).get("labels"):
        escaped = key.replace("~", "~0").replace("/", "~1")
        return [{"op": "add", "path": f"/metadata/labels/{escaped}", "value": value}]
    return [{"op": "add", "path": "/metadata/labels", "value": {key: value}}]


def make_handler(label_key: str, label_value: str) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            review = json.loads(body)
            request = review["request"]
            pod = request.get("object") or {}
            patch = patch_for(pod, label_key, label_value)
            print(
                json.dumps(
                    {
                        "path": urllib.parse.urlsplit(self.path).path,
                        "uid": request["uid"],
                        "kind": request["kind"]["kind"],
                        "operation": request["operation"],
                        "namespace": request.get("namespace"),
                        "name": pod.get("metadata", {}).get("name") or pod.get("metadata", {}).get("generateName"),
                        "dryRun": request.get("dryRun", False),
                    }
                ),
                flush=True,
            )
            response = {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": request["uid"],
                    "allowed": True,
                    "patchType": "JSONPatch",
                    "patch": base64.b64encode(json.dumps(patch).encode()).decode(),
                },
            }
            payload = json.dumps(response).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            # Access logs go to stderr so stdout stays one JSON line per review.
            sys.stderr.write(format % args + "\n")

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--label", required=True, help="KEY=VALUE to add to every pod")
    args = parser.parse_args()
    key, _, value = args.label.partition("=")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(args.cert, args.key)
    server = http.server.ThreadingHTTPServer((args.host, args.port), make_handler(key, value))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(json.dumps({"listening": f"{args.host}:{server.server_address[1]}"}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
