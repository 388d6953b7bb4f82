"""CloudEvents 1.0 envelopes, as Dapr writes them (JSON event format).

A published payload is wrapped unless it already is a CloudEvent (then the sidecar only
fills in what is missing) or the publisher asks for raw mode (`rawPayload: "true"`).
The broker stores the envelope as JSON; subscribers get it back as a `TopicEvent`.
"""

import base64
import binascii
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ottava_sidecar.components.pubsub.base import Message

CONTENT_TYPE = "application/cloudevents+json"
SPEC_VERSION = "1.0"
EVENT_TYPE = "com.dapr.event.sent"
RAW_PAYLOAD = "rawPayload"
_CORE = frozenset({"id", "source", "type", "specversion", "datacontenttype", "data", "data_base64"})


def is_raw(metadata: Mapping[str, str]) -> bool:
    return metadata.get(RAW_PAYLOAD, "").lower() == "true"


def is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _is_binary_type(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "application/octet-stream"


@dataclass(slots=True)
class Envelope:
    """What the broker stores: the bytes and their media type."""

    data: bytes
    content_type: str


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
    event = _existing_event(data, content_type)
    if event is None:
        content_type = content_type or "text/plain"
        event = {
            "specversion": SPEC_VERSION,
            "id": str(uuid.uuid4()),
            "source": source,
            "type": EVENT_TYPE,
            "datacontenttype": content_type,
        }
        event.update(_data_attribute(data, content_type))
    else:
        event.setdefault("specversion", SPEC_VERSION)
        event.setdefault("id", str(uuid.uuid4()))
        event.setdefault("source", source)
        event.setdefault("type", EVENT_TYPE)
    event.setdefault("time", datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"))
    event["topic"] = topic
    event["pubsubname"] = pubsub_name
    return Envelope(json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode(), CONTENT_TYPE)


def _not_json(constant: str) -> Any:
    """NaN and Infinity are Python's, not JSON's: a payload holding them is kept as text."""
    raise ValueError(f"{constant} is not JSON")


def _existing_event(data: bytes, content_type: str) -> dict[str, Any] | None:
    """The payload as a CloudEvent when it is one (declared, or JSON with `specversion`)."""
    declared = content_type.split(";", 1)[0].strip().lower() == CONTENT_TYPE
    if not declared and not is_json_type(content_type):
        return None
    try:
        parsed = json.loads(data, parse_constant=_not_json)
    except ValueError:
        return None
    if isinstance(parsed, dict) and (declared or "specversion" in parsed):
        return parsed
    return None


def _data_attribute(data: bytes, content_type: str) -> dict[str, Any]:
    if is_json_type(content_type):
        try:
            return {"data": json.loads(data, parse_constant=_not_json)}
        except ValueError:
            pass  # declared JSON but is not: keep it as text, as it came
    if not _is_binary_type(content_type):
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
