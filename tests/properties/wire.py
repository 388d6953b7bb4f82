"""Calling the sidecar over HTTP and gRPC, and the properties every answer must have.

Whatever the input, an answer is either a success or a client error that explains
itself: HTTP never answers 5xx, and its 4xx bodies are Dapr's JSON
`{"errorCode": "...", "message": "..."}`; gRPC never answers a server-fault status
(UNKNOWN, INTERNAL, …), and every failed status carries a message. `Expect` says what
the model predicts; `check` fails the property when the answer is not among it.
"""

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import grpc
import httpx

# Statuses that mean "the sidecar broke", never "your request was bad".
SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
CLIENT_ERRORS = frozenset(set(grpc.StatusCode) - SERVER_FAULTS - {grpc.StatusCode.OK})
# Past this many bytes of request line, a URL may be refused (Limits.read_buffer_bytes is 8 KiB):
# a request whose URL is longer may get any 4xx, one whose URL is shorter must be served.
URL_SAFE_BYTES = 6 * 1024
URL_REFUSED_BYTES = 8 * 1024


@dataclass(frozen=True)
class Expect:
    """What the model predicts: success, or one of these refusals (and then nothing changes)."""

    ok: bool
    http: frozenset[int] = frozenset()
    codes: frozenset[grpc.StatusCode] = frozenset()
    why: str = ""
    # Either outcome is right (the model cannot tell, e.g. a URL near the size limit).
    either: bool = False

    def because(self, why: str) -> "Expect":
        return Expect(self.ok, self.http, self.codes, why, self.either)


OK = Expect(True, why="a valid request")
INVALID = Expect(False, frozenset({400}), frozenset({grpc.StatusCode.INVALID_ARGUMENT}))
# An ETag the store did not issue is INVALID_ARGUMENT, one that does not match is ABORTED;
# which of the two a given wrong ETag is depends on the store's ETag format.
ETAG_REFUSED = Expect(
    False, frozenset({400, 409}), frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ABORTED})
)
ANY_REFUSAL = Expect(False, frozenset(range(400, 500)), CLIENT_ERRORS)


@dataclass
class Answer:
    """One call's outcome: `ok`, the HTTP status or gRPC code, and the decoded body or message."""

    ok: bool
    status: int | grpc.StatusCode
    body: Any = None
    message: str = ""
    raw: bytes = b""  # an HTTP answer's body as sent
    headers: dict[str, str] = field(default_factory=dict)


class Surface:
    """The sidecar's two ports, with the checks every answer goes through."""

    def __init__(self, http_url: str, grpc_address: str) -> None:
        self.http = httpx.Client(base_url=http_url, timeout=30.0)
        self.channel = grpc.insecure_channel(
            grpc_address,
            options=[("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)],
        )

    def close(self) -> None:
        self.http.close()
        self.channel.close()

    # --- HTTP ----------------------------------------------------------------------

    def request(
        self, method: str, path: str, *, content: bytes | None = None, json_body: Any = None, **kwargs: Any
    ) -> Answer:
        """`path` is sent as written (already percent-encoded); a `json_body` may hold NaN/Infinity."""
        if json_body is not None:
            content = json.dumps(json_body, allow_nan=True).encode()
            kwargs.setdefault("headers", {})["Content-Type"] = "application/json"
        response = self.http.request(method, path, content=content, **kwargs)
        return http_answer(method, path, response)

    # --- gRPC ----------------------------------------------------------------------

    def call(self, method: Any, request: Any) -> Answer:
        try:
            response = method(request, timeout=30.0)
        except grpc.RpcError as err:
            return grpc_answer(method, request, err)
        return Answer(True, grpc.StatusCode.OK, response)


def strict_json(text: bytes | str) -> Any:
    """JSON as RFC 8259 has it: NaN and Infinity are not JSON."""

    def refuse(token: str) -> Any:
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def http_answer(method: str, path: str, response: httpx.Response) -> Answer:
    where = f"{method} {path[:200]} → {response.status_code}: {response.content[:300]!r}"
    assert response.status_code < 500, f"server error for a client's input: {where}"
    if response.status_code < 400:
        body: Any = response.content
        if response.headers.get("content-type", "").startswith("application/json"):
            try:
                body = strict_json(response.content)
            except ValueError as err:
                raise AssertionError(f"the answer is not valid JSON ({err}): {where}") from None
        return Answer(True, response.status_code, body, raw=response.content, headers=dict(response.headers))
    try:
        error = strict_json(response.content)
    except ValueError:
        raise AssertionError(f"error body is not JSON: {where}") from None
    assert isinstance(error, dict), f"error body is not a JSON object: {where}"
    assert isinstance(error.get("errorCode"), str) and error["errorCode"], f"error body has no errorCode: {where}"
    assert isinstance(error.get("message"), str) and error["message"], f"error body has no message: {where}"
    return Answer(False, response.status_code, error, error["message"], raw=response.content)


def grpc_answer(method: Any, request: Any, err: grpc.RpcError) -> Answer:
    code: grpc.StatusCode = err.code()
    details: str | None = err.details()
    name = getattr(method, "_method", method)
    where = f"{name!r} {str(request)[:300]!r} → {code.name}: {details!r}"
    assert code not in SERVER_FAULTS, f"server-fault status for a client's input: {where}"
    assert details, f"status without a message: {where}"
    return Answer(False, code, None, details)


def check(answer: Answer, expect: Expect, what: str) -> None:
    """Fail unless `answer` is what the model predicted."""
    if expect.either:
        return
    said = f"{what}: expected {'success' if expect.ok else 'a refusal'} ({expect.why}), got {answer.status}"
    if expect.ok:
        assert answer.ok, f"{said}: {answer.message}"
        return
    assert not answer.ok, said
    allowed: frozenset[Any] = expect.http if isinstance(answer.status, int) else expect.codes
    assert answer.status in allowed, f"{said} (allowed: {sorted(str(s) for s in allowed)}): {answer.message}"


def path_segment(text: str) -> str:
    """`text` as one URL path segment: every reserved character percent-encoded, dots too."""
    return quote(text, safe="").replace(".", "%2E")


def url_fits(path: str) -> Expect | None:
    """None when a URL this long must be served; otherwise what its answer may be."""
    size = len(path.encode())
    if size <= URL_SAFE_BYTES:
        return None
    if size > URL_REFUSED_BYTES:
        return ANY_REFUSAL.because(f"a URL of {size} bytes is over the request-line limit")
    return Expect(False, either=True, why="a URL near the request-line limit")
