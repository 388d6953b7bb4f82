"""CloudEvents 1.0 envelopes, as Dapr writes them (JSON event format).

A published payload is wrapped unless it already is a CloudEvent (then the sidecar only
fills in what is missing) or the publisher asks for raw mode (`rawPayload: "true"`).
The broker stores the envelope as JSON; subscribers get it back as a `TopicEvent`.
"""

import base64
import binascii
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ottava_sidecar import tracing
from ottava_sidecar.components.pubsub.base import Message

CONTENT_TYPE = "application/cloudevents+json"
SPEC_VERSION = "1.0"
EVENT_TYPE = "com.dapr.event.sent"
RAW_PAYLOAD = "rawPayload"
_CORE = frozenset({"id", "source", "type", "specversion", "datacontenttype", "data", "data_base64"})


def is_raw(metadata: Mapping[str, str]) -> bool:
    return metadata.get(RAW_PAYLOAD, "").lower() == "true"


def _media(content_type: str) -> str:
    """The media type alone: no parameters, lower case."""
    return content_type.split(";", 1)[0].strip().lower()


def _is_json_media(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


def is_json_type(content_type: str) -> bool:
    return _is_json_media(_media(content_type))


@dataclass(slots=True)
class Envelope:
    """What the broker stores: the bytes and their media type."""

    data: bytes
    content_type: str


# Made once: `json.dumps` and `json.loads` build a new encoder or decoder on every call
# that passes options, which costs a publish more than the encoding itself. An event is
# parsed JSON or built here, so it cannot hold a cycle: no need to look for one.
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode


def _not_json(constant: str) -> Any:
    """NaN and Infinity are Python's, not JSON's: a payload holding them is kept as text."""
    raise ValueError(f"{constant} is not JSON")


_DECODE = json.JSONDecoder(parse_constant=_not_json).decode
_UNPARSED = object()  # a payload not read as JSON: its media type is not JSON, or it is not


def _parse_json(data: bytes) -> Any:
    """The payload as `json.loads(data, parse_constant=_not_json)` reads it; `_UNPARSED` where that fails."""
    try:
        return _DECODE(data.decode(json.detect_encoding(data), "surrogatepass"))
    except ValueError:
        return _UNPARSED


def _new_id() -> str:
    """A random (version 4) UUID as text, as `str(uuid.uuid4())` writes it."""
    value = int.from_bytes(os.urandom(16), "big")
    value = (value & ~(0xC000 << 48) | 0x8000 << 48) & ~(0xF000 << 64) | 4 << 76
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class _Clock:
    """The time attribute: UTC with milliseconds (`2026-11-30T07:17:27.123Z`); the part up to
    the second is formatted once per second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        ns = time.time_ns()
        second = ns // 1_000_000_000
        if second != self._second:
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._prefix}.{ns // 1_000_000 % 1000:03d}Z"


_CLOCK = _Clock()


def wrap(
    data: bytes,
    content_type: str,
    *,
    pubsub_name: str,
    topic: str,
    source: str,
    metadata: Mapping[str, str],
) -> Envelope:
    """The payload as the broker should store it (see the module docstring)."""
    if is_raw(metadata):
        return Envelope(data, content_type or "application/octet-stream")
    media = _media(content_type)
    declared = media == CONTENT_TYPE
    # A JSON payload is parsed once: to tell whether it already is a CloudEvent, and
    # else to become the event's `data`. Declared JSON that does not parse stays text.
    parsed = _parse_json(data) if declared or _is_json_media(media) else _UNPARSED
    if isinstance(parsed, dict) and (declared or "specversion" in parsed):
        event: dict[str, Any] = parsed
        event.setdefault("specversion", SPEC_VERSION)
        if "id" not in event:
            event["id"] = _new_id()
        event.setdefault("source", source)
        event.setdefault("type", EVENT_TYPE)
    else:
        content_type = content_type or "text/plain"
        event = {
            "specversion": SPEC_VERSION,
            "id": _new_id(),
            "source": source,
            "type": EVENT_TYPE,
            "datacontenttype": content_type,
        }
        event.update(_data_attribute(data, media, parsed))
    if "time" not in event:
        event["time"] = _CLOCK.now()
    event["topic"] = topic
    event["pubsubname"] = pubsub_name
    if tracing.ACTIVE is not None:  # the subscriber's delivery continues the publisher's trace
        tracing.inject_into(event)
    return Envelope(_ENCODE(event).encode(), CONTENT_TYPE)


def _data_attribute(data: bytes, media: str, parsed: Any) -> dict[str, Any]:
    if parsed is not _UNPARSED:
        return {"data": parsed}
    if media != "application/octet-stream":
        try:
            return {"data": data.decode()}
        except UnicodeDecodeError:
            pass
    return {"data_base64": base64.b64encode(data).decode()}


@dataclass(slots=True)
class TopicEvent:
    """One message as subscribers see it: the CloudEvent's attributes and its payload."""

    id: str
    source: str
    type: str
    spec_version: str
    data_content_type: str
    data: bytes  # the payload itself (decoded from `data` or `data_base64`)
    topic: str
    pubsub_name: str
    message_id: str  # the broker's id, the same on every redelivery
    attempt: int
    extensions: dict[str, Any] = field(default_factory=dict)
    envelope: dict[str, Any] | None = None  # the whole CloudEvent; None for a raw payload
    raw: bytes = b""  # the bytes the broker delivered

    def http_body(self, *, raw_subscription: bool) -> tuple[bytes, str]:
        """Body and media type for an HTTP subscriber (Dapr's: the CloudEvent JSON)."""
        if self.envelope is None:
            if raw_subscription:
                return self.raw, self.data_content_type
            # A raw message for a subscriber that expects CloudEvents: wrap it now.
            return json.dumps(self.as_cloudevent(), separators=(",", ":")).encode(), CONTENT_TYPE
        return self.raw, CONTENT_TYPE

    def as_cloudevent(self) -> dict[str, Any]:
        if self.envelope is not None:
            return self.envelope
        return {
            "specversion": self.spec_version,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "datacontenttype": self.data_content_type,
            "data_base64": base64.b64encode(self.data).decode(),
            "topic": self.topic,
            "pubsubname": self.pubsub_name,
        }


def unwrap(message: Message, pubsub_name: str) -> TopicEvent:
    """The delivered message as a `TopicEvent`, whether it holds a CloudEvent or a raw payload."""
    event: dict[str, Any] | None = None
    if message.content_type.split(";", 1)[0].strip().lower() == CONTENT_TYPE:
        try:
            parsed = json.loads(message.data)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            event = parsed
    if event is None:
        return TopicEvent(
            id=message.id,
            source="",
            type=EVENT_TYPE,
            spec_version=SPEC_VERSION,
            data_content_type=message.content_type or "application/octet-stream",
            data=message.data,
            topic=message.topic,
            pubsub_name=pubsub_name,
            message_id=message.id,
            attempt=message.attempt,
            raw=message.data,
        )
    content_type = str(event.get("datacontenttype") or "")
    return TopicEvent(
        id=str(event.get("id") or message.id),
        source=str(event.get("source") or ""),
        type=str(event.get("type") or EVENT_TYPE),
        spec_version=str(event.get("specversion") or SPEC_VERSION),
        data_content_type=content_type,
        data=_payload(event, content_type),
        topic=message.topic,
        pubsub_name=pubsub_name,
        message_id=message.id,
        attempt=message.attempt,
        extensions={k: v for k, v in event.items() if k not in _CORE},
        envelope=event,
        raw=message.data,
    )


def _payload(event: Mapping[str, Any], content_type: str) -> bytes:
    if "data_base64" in event:
        try:
            return base64.b64decode(str(event["data_base64"]), validate=True)
        except (binascii.Error, ValueError):
            return str(event["data_base64"]).encode()
    if "data" not in event or event["data"] is None:
        return b""
    data = event["data"]
    if isinstance(data, str) and not is_json_type(content_type):
        return data.encode()
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
