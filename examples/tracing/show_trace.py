"""Print one trace from a collector's file exporter output (OTLP JSON, one line per batch) as a tree.

    python examples/tracing/show_trace.py SPANS_FILE TRACE_ID [--wait N]

`--wait N` polls the file (up to 30 s) until the trace has N spans: exporters send
their spans a second or so after the calls end.
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def spans_of(path: Path, trace_id: str) -> list[dict[str, Any]]:
    found = []
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    for line in text.splitlines():
        for resource_spans in json.loads(line).get("resourceSpans", []):
            attributes = resource_spans.get("resource", {}).get("attributes", [])
            service = next((a["value"].get("stringValue", "") for a in attributes if a["key"] == "service.name"), "")
            for scope_spans in resource_spans.get("scopeSpans", []):
                for span in scope_spans.get("spans", []):
                    if span["traceId"] == trace_id:
                        found.append({**span, "service": service})
    return found


def show(spans: list[dict[str, Any]], parent: str, depth: int) -> None:
    children = sorted(
        (s for s in spans if s.get("parentSpanId", "") == parent), key=lambda s: int(s["startTimeUnixNano"])
    )
    for span in children:
        took = (int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"])) / 1e6
        kind = KINDS.get(span.get("kind", 0), "?")
        print(f"{'  ' * depth}{span['service']}: {span['name']} ({kind}, {took:.1f} ms, span {span['spanId']})")
        show(spans, span["spanId"], depth + 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spans_file", type=Path)
    parser.add_argument("trace_id")
    parser.add_argument("--wait", type=int, default=1, help="spans to wait for")
    args = parser.parse_args()
    deadline = time.monotonic() + 30
    spans = spans_of(args.spans_file, args.trace_id)
    while len(spans) < args.wait and time.monotonic() < deadline:
        time.sleep(0.2)
        spans = spans_of(args.spans_file, args.trace_id)
    if len(spans) < args.wait:
        print(f"only {len(spans)} of {args.wait} spans of trace {args.trace_id} arrived", file=sys.stderr)
        return 1
    known = {s["spanId"] for s in spans}
    for outside in sorted({s.get("parentSpanId", "") for s in spans} - known):
        print(f"(parent {outside or 'none'}: not in the collector, e.g. app A's own span)")
        show(spans, outside, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
