#!/usr/bin/env bash
# A trace you can see: app A -> sidecar "shop" -> sidecar "echo" -> app B, in a real
# OpenTelemetry Collector. Run from the repository's root after `make venv`:
#
#   examples/tracing/run.sh
#
# It builds the collector once (tools/otelcol/build.sh, cached), starts it and two
# `ottava run` sidecars with examples/tracing/tracing.yaml, calls app B through both
# with a W3C traceparent (what an instrumented app A sends), and prints the trace that
# the collector wrote. Everything listens on loopback, on the ports below (each can be
# set in the environment), and stops when the script ends.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ottava=${OTTAVA:-.venv/bin/ottava}
python=${PYTHON:-.venv/bin/python}
OTLP_PORT=${OTLP_PORT:-4317}
SHOP_HTTP=${SHOP_HTTP:-3500} SHOP_GRPC=${SHOP_GRPC:-50001} SHOP_INTERNAL=${SHOP_INTERNAL:-50002} SHOP_METRICS=${SHOP_METRICS:-9090}
ECHO_HTTP=${ECHO_HTTP:-3501} ECHO_GRPC=${ECHO_GRPC:-50011} ECHO_INTERNAL=${ECHO_INTERNAL:-50012} ECHO_METRICS=${ECHO_METRICS:-9091}
APP_PORT=${APP_PORT:-6002}
TRACE_ID=${TRACE_ID:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}

work=$(mktemp -d "${TMPDIR:-/tmp}/ottava-tracing-XXXXXX")
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

wait_for() { # URL or host:port, what
	for _ in $(seq 1 300); do
		if [[ $1 == http* ]]; then curl -sf -o /dev/null "$1" && return 0
		else (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0; fi
		sleep 0.1
	done
	echo "run.sh: $2 did not come up; its log: $work/$2.log" >&2
	cat "$work/$2.log" >&2
	exit 1
}

echo "==> the collector (OTLP/gRPC on 127.0.0.1:$OTLP_PORT, spans to $work/spans.jsonl)"
otelcol=$(tools/otelcol/build.sh | tail -n1)
OTLP_PORT=$OTLP_PORT SPANS_FILE=$work/spans.jsonl "$otelcol" --config "$here/otelcol.yaml" >"$work/collector.log" 2>&1 &
pids+=($!)
wait_for "127.0.0.1:$OTLP_PORT" collector

sed "s/127.0.0.1:4317/127.0.0.1:$OTLP_PORT/" "$here/tracing.yaml" >"$work/tracing.yaml"
echo "==> sidecar 'echo' with app B (python -m http.server on $APP_PORT)"
"$ottava" run --app-id echo --app-port "$APP_PORT" --config "$work/tracing.yaml" \
	--http-port "$ECHO_HTTP" --grpc-port "$ECHO_GRPC" --internal-grpc-port "$ECHO_INTERNAL" --metrics-port "$ECHO_METRICS" \
	-- "$python" -m http.server "$APP_PORT" --bind 127.0.0.1 --directory "$here" >"$work/echo.log" 2>&1 &
pids+=($!)
echo "==> sidecar 'shop' (app A's)"
"$ottava" run --app-id shop --config "$work/tracing.yaml" \
	--http-port "$SHOP_HTTP" --grpc-port "$SHOP_GRPC" --internal-grpc-port "$SHOP_INTERNAL" --metrics-port "$SHOP_METRICS" \
	>"$work/shop.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$ECHO_HTTP/v1.0/healthz" echo
wait_for "http://127.0.0.1:$SHOP_HTTP/v1.0/healthz" shop

echo "==> app A calls app B's GET /otelcol.yaml through its sidecar, in trace $TRACE_ID"
curl -sf -o /dev/null -w 'app B answered %{http_code}\n' \
	-H "traceparent: 00-$TRACE_ID-00f067aa0ba902b7-01" \
	"http://127.0.0.1:$SHOP_HTTP/v1.0/invoke/echo/method/otelcol.yaml"

echo "==> the trace, as the collector received it"
"$python" "$here/show_trace.py" "$work/spans.jsonl" "$TRACE_ID" --wait 3
