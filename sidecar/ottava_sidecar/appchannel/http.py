"""The app channel to an HTTP app, as Dapr calls HTTP apps back.

* subscriptions: `GET /dapr/subscribe` → `[{"pubsubname", "topic", "route" | "routes":
  {"rules": [{"match", "path"}], "default"}, "metadata", "deadLetterTopic"}]`; 404, 405
  and 501 mean none; unreachable, a timeout or 502/503/504 are asked again; any other
  answer that is not such a list is a problem shown in readiness (see `AppSubscriptions`);
* events: `POST <route>` with the CloudEvent as `application/cloudevents+json`; a 2xx
  answer's JSON `{"status": "SUCCESS" | "RETRY" | "DROP"}` is the verdict (no status:
  SUCCESS), 404 drops the event, any other status redelivers it;
* batches (a subscription with `"bulkSubscribe": {"enabled": true, "maxMessagesCount",
  "maxAwaitDurationMs"}`): `POST <route>` with Dapr's bulk body `{"id", "entries":
  [{"entryId", "event", "contentType", "metadata"}], "metadata", "topic", "pubsubname",
  "type"}` as `application/json`; the 2xx answer `{"statuses": [{"entryId", "status"}]}`
  gives each entry its verdict (an entry it leaves out is redelivered; no `statuses` at
  all: every entry SUCCESS); 404 drops the batch, any other status redelivers it;
* invocation: `<VERB> /<method>?<query>` with the caller's headers and body.
"""

import base64
import json
import logging
import uuid
from typing import Any

import aiohttp
from pydantic import ConfigDict, Field, ValidationError

from ottava_sidecar import contract, gojson, tracing
from ottava_sidecar.appchannel.base import (
    AppChannel,
    AppChannelError,
    AppSubscriptions,
    AppTimeoutError,
    AppUnavailableError,
)
from ottava_sidecar.components.bindings.base import BindingEvent
from ottava_sidecar.invocation.messages import InvocationRequest, InvocationResponse, grpc_code_for_http
from ottava_sidecar.messaging import cloudevents
from ottava_sidecar.messaging.cloudevents import TopicEvent
from ottava_sidecar.messaging.delivery import BatchEntry
from ottava_sidecar.messaging.subscriptions import SubscriptionSpec, Verdict, bulk_from

log = logging.getLogger(__name__)

# Headers that belong to one connection, not to the call (RFC 9110 §7.6.1), and those
# the HTTP client sets itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


class _Body(gojson.Model):  # null is a field not given, as Dapr reads the app's answers
    model_config = ConfigDict(extra="ignore", populate_by_name=True, coerce_numbers_to_str=True)


class _Rule(_Body):
    match: str = ""
    path: str


class _Routes(_Body):
    rules: list[_Rule] = Field(default_factory=list)
    default: str = ""


class _BulkSubscribe(_Body):
    enabled: bool = False
    max_messages_count: int = Field(default=0, alias="maxMessagesCount")
    max_await_duration_ms: int = Field(default=-1, alias="maxAwaitDurationMs")


class _Subscription(_Body):
    pubsub_name: str = Field(alias="pubsubname")
    topic: str
    route: str = ""
    routes: _Routes | None = None
    metadata: dict[str, str] | None = None
    dead_letter_topic: str = Field(default="", alias="deadLetterTopic")
    bulk_subscribe: _BulkSubscribe | None = Field(default=None, alias="bulkSubscribe")


class _EntryStatus(_Body):
    entry_id: str = Field(alias="entryId")
    status: str = ""


class _BulkAnswer(_Body):
    statuses: list[_EntryStatus] | None = None


# Answers to GET /dapr/subscribe that mean "this app declares no subscriptions": no such
# route, a route for other methods only, or a server that implements no such thing.
_NONE_DECLARED = frozenset({404, 405, 501})
# Answers that mean "not now": a proxy or the app itself not ready yet.
_NOT_YET = frozenset({502, 503, 504})
_NONE_USED = "; no subscription of the app is used"


class HttpAppChannel(AppChannel):
    protocol = "http"

    def __init__(self, app_id: str, host: str, port: int, *, timeout: float, app_token: str | None = None) -> None:
        super().__init__(app_id, host, port, timeout=timeout, app_token=app_token)
        self._base = f"http://{host}:{port}"
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=0),
                auto_decompress=False,
                headers={contract.API_TOKEN_HEADER: self.app_token} if self.app_token else None,
            )
        return self._session

    async def list_subscriptions(self) -> AppSubscriptions:
        what = f"{self.describe()}: GET /dapr/subscribe"
        try:
            async with self._client().get(f"{self._base}/dapr/subscribe") as response:
                status = response.status
                body = await response.read()
        except TimeoutError:
            raise AppTimeoutError(f"{what} got no answer in {self.timeout}s") from None
        except aiohttp.ClientConnectionError as err:
            raise AppUnavailableError(f"{self.describe()} is not reachable: {err}") from None
        if status in _NONE_DECLARED:
            log.info("%s answered %d: the app declares no subscriptions", what, status)
            return AppSubscriptions()
        if status in _NOT_YET:
            raise AppChannelError(f"{what} answered {status} (not ready yet?): {body[:200]!r}")
        if status != 200:
            return AppSubscriptions(problems=[f"{what} answered {status}, not 200: {body[:200]!r}{_NONE_USED}"])
        try:
            answer: Any = json.loads(body) if body.strip() else []
        except ValueError as err:
            return AppSubscriptions(problems=[f"{what} answered with invalid JSON ({err}): {body[:200]!r}{_NONE_USED}"])
        if answer is None:
            answer = []
        if not isinstance(answer, list):
            return AppSubscriptions(
                problems=[
                    f"{what} answered a JSON {_json_type(answer)}, not a list of subscriptions "
                    f'([{{"pubsubname": ..., "topic": ..., "route": ...}}]): {body[:200]!r}{_NONE_USED}'
                ]
            )
        subscriptions = AppSubscriptions()
        for index, item in enumerate(answer):
            _add(subscriptions, index, item)
        subscriptions.problems = [f"{what}: {problem}" for problem in subscriptions.problems]
        return subscriptions

    async def _deliver(self, subscription: SubscriptionSpec, event: TopicEvent, path: str) -> Verdict:
        body, content_type = event.http_body(raw_subscription=subscription.raw_payload)
        headers = {"Content-Type": content_type, "pubsubname": event.pubsub_name, "topic": event.topic}
        tracing.inject_into(headers)
        url = f"{self._base}/{path.lstrip('/')}"
        try:
            async with self._client().post(url, data=body, headers=headers) as response:
                answer = await response.read()
                status = response.status
        except TimeoutError:
            raise AppTimeoutError(
                f"{self.describe()} did not answer POST /{path.lstrip('/')} in {self.timeout}s"
            ) from None
        except aiohttp.ClientConnectionError as err:
            raise AppUnavailableError(f"{self.describe()} is not reachable: {err}") from None
        if status == 404:
            log.warning(
                "%s has no route /%s for topic %s: dropping event %s",
                self.describe(),
                path.lstrip("/"),
                event.topic,
                event.id,
            )
            return Verdict.DROP
        if not 200 <= status < 300:
            raise AppChannelError(f"{self.describe()} answered event {event.id} with HTTP {status}: {answer[:200]!r}")
        return _verdict(answer)

    async def _deliver_bulk(
        self, subscription: SubscriptionSpec, entries: list[BatchEntry], path: str
    ) -> dict[str, Verdict]:
        body = json.dumps(bulk_body(subscription, entries), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "pubsubname": subscription.pubsub_name,
            "topic": subscription.topic,
        }
        tracing.inject_into(headers)
        route = f"/{path.lstrip('/')}"
        try:
            async with self._client().post(f"{self._base}{route}", data=body, headers=headers) as response:
                answer = await response.read()
                status = response.status
        except TimeoutError:
            raise AppTimeoutError(
                f"{self.describe()} did not answer POST {route} (a batch) in {self.timeout}s"
            ) from None
        except aiohttp.ClientConnectionError as err:
            raise AppUnavailableError(f"{self.describe()} is not reachable: {err}") from None
        if status == 404:
            log.warning(
                "%s has no route %s for topic %s: dropping a batch of %d events",
                self.describe(),
                route,
                subscription.topic,
                len(entries),
            )
            return {entry.entry_id: Verdict.DROP for entry in entries}
        if not 200 <= status < 300:
            raise AppChannelError(
                f"{self.describe()} answered a batch of {len(entries)} events with HTTP {status}: {answer[:200]!r}"
            )
        return _bulk_verdicts(answer, entries)

    async def _invoke(self, request: InvocationRequest) -> InvocationResponse:
        verb = request.verb or "POST"
        url = f"{self._base}/{request.method.lstrip('/')}"
        if request.query:
            url = f"{url}?{request.query}"
        headers = [(k, v) for k, v in request.headers if k not in HOP_BY_HOP and k != "content-type"]
        if request.content_type:
            headers.append(("Content-Type", request.content_type))
        tracing.inject(headers)
        timeout = aiohttp.ClientTimeout(total=min(self.timeout, request.timeout_seconds or self.timeout))
        try:
            async with self._client().request(
                verb, url, data=request.data or None, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                data = await response.read()
                return InvocationResponse(
                    status=response.status,
                    data=data,
                    content_type=response.headers.get("Content-Type", ""),
                    headers=[
                        (k.lower(), v)
                        for k, v in response.headers.items()
                        if k.lower() not in HOP_BY_HOP and k.lower() != "content-type"
                    ],
                    grpc_code=grpc_code_for_http(response.status),
                    message="" if 200 <= response.status < 300 else data[:500].decode(errors="replace"),
                )
        except TimeoutError:
            raise AppTimeoutError(
                f"{self.describe()} did not answer {verb} /{request.method.lstrip('/')} in {timeout.total}s"
            ) from None
        except aiohttp.ClientConnectionError as err:
            raise AppUnavailableError(f"{self.describe()} is not reachable: {err}") from None

    async def input_bindings(self, routes: dict[str, str]) -> set[str]:
        """Dapr's test: `OPTIONS <route>` answered 2xx or 405 means the app has a route there."""
        listened: set[str] = set()
        for name, route in routes.items():
            try:
                async with self._client().options(f"{self._base}/{route.lstrip('/')}") as response:
                    await response.read()
                    status = response.status
            except TimeoutError:
                raise AppTimeoutError(f"{self.describe()} did not answer OPTIONS {route} in {self.timeout}s") from None
            except aiohttp.ClientConnectionError as err:
                raise AppUnavailableError(f"{self.describe()} is not reachable: {err}") from None
            if 200 <= status < 300 or status == 405:
                listened.add(name)
        return listened

    async def deliver_binding(self, name: str, route: str, event: BindingEvent) -> None:
        """`POST <route>` with the data as body and the metadata as headers; a 2xx answer accepts it."""
        headers = {k: v for k, v in event.metadata.items() if k.lower() not in HOP_BY_HOP and _header_value(v)}
        headers["Content-Type"] = "application/json"
        tracing.inject_into(headers)
        try:
            async with self._client().post(
                f"{self._base}/{route.lstrip('/')}", data=event.data, headers=headers
            ) as response:
                answer = await response.read()
                status = response.status
        except TimeoutError:
            raise AppTimeoutError(f"{self.describe()} did not answer POST {route} in {self.timeout}s") from None
        except aiohttp.ClientConnectionError as err:
            raise AppUnavailableError(f"{self.describe()} is not reachable: {err}") from None
        if not 200 <= status < 300:
            raise AppChannelError(
                f"{self.describe()} answered the event of input binding {name} with HTTP {status}: {answer[:200]!r}"
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _add(subscriptions: AppSubscriptions, index: int, item: Any) -> None:
    """Item `index` of the app's list, validated on its own so that one bad item spares the rest."""
    try:
        parsed = _Subscription.model_validate(item)
    except ValidationError as err:
        names = item if isinstance(item, dict) else {}
        label = f"{names.get('pubsubname', '?')}/{names.get('topic', '?')}"
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(item)'}: {e['msg']}" for e in err.errors(include_url=False)
        )
        subscriptions.problems.append(f"item {index} (subscription to {label}) ignored: {fields}")
        return
    routes = parsed.routes or _Routes()
    rules = [(r.match, r.path) for r in routes.rules if r.match]
    # A rule without a match is a default route too (Dapr accepts both spellings).
    default = parsed.route or routes.default or next((r.path for r in routes.rules if not r.match), "")
    if not default and not rules:
        default = parsed.topic
    bulk = parsed.bulk_subscribe
    subscriptions.add(
        parsed.pubsub_name,
        parsed.topic,
        default_path=default,
        rules=rules,
        metadata=parsed.metadata or {},
        dead_letter_topic=parsed.dead_letter_topic,
        bulk=bulk_from(bulk.enabled, bulk.max_messages_count, bulk.max_await_duration_ms) if bulk else None,
    )


def _header_value(value: str) -> bool:
    return value.isprintable() and value.isascii()


def _json_type(value: Any) -> str:
    return {dict: "object", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "value")


def _verdict(answer: bytes) -> Verdict:
    """Dapr's reading of a 2xx answer: its `status`, SUCCESS when it has none."""
    if not answer.strip():
        return Verdict.SUCCESS
    try:
        parsed: Any = json.loads(answer)
    except ValueError:
        return Verdict.SUCCESS
    status = parsed.get("status") if isinstance(parsed, dict) else None
    if not status:
        return Verdict.SUCCESS
    try:
        return Verdict(str(status).upper())
    except ValueError:
        log.warning("unknown event status %r from the app: redelivering", status)
        return Verdict.RETRY


BULK_EVENT_TYPE = "com.dapr.event.sent.bulk"


def bulk_body(subscription: SubscriptionSpec, entries: list[BatchEntry]) -> dict[str, Any]:
    """Dapr's bulk request body: each entry's `event` is the CloudEvent (JSON), or for a raw
    subscription's raw payload the payload itself (JSON, text, or base64 of other bytes)."""
    items = []
    for entry in entries:
        event = entry.event
        item: dict[str, Any] = {"entryId": entry.entry_id, "metadata": dict(entry.metadata)}
        if event.envelope is None and subscription.raw_payload:
            item["event"] = _raw_event(event)
            item["contentType"] = event.data_content_type
        else:
            item["event"] = event.as_cloudevent()
            item["contentType"] = cloudevents.CONTENT_TYPE
        items.append(item)
    return {
        "id": str(uuid.uuid4()),
        "entries": items,
        "metadata": {},
        "topic": subscription.topic,
        "pubsubname": subscription.pubsub_name,
        "type": BULK_EVENT_TYPE,
    }


def _raw_event(event: cloudevents.TopicEvent) -> Any:
    if cloudevents.is_json_type(event.data_content_type):
        try:
            return json.loads(event.data)
        except ValueError:
            pass
    try:
        return event.data.decode()
    except UnicodeDecodeError:
        return base64.b64encode(event.data).decode()


def _bulk_verdicts(answer: bytes, entries: list[BatchEntry]) -> dict[str, Verdict]:
    """Each entry's verdict in a 2xx answer to a batch (see the module docstring)."""
    everything = {entry.entry_id: Verdict.SUCCESS for entry in entries}
    if not answer.strip():
        return everything
    try:
        parsed = _BulkAnswer.model_validate_json(answer)
    except ValidationError:
        log.warning(
            'the app\'s answer to a batch is not {"statuses": [...]}: %r; every entry is delivered', answer[:200]
        )
        return everything
    if parsed.statuses is None:
        return everything
    verdicts: dict[str, Verdict] = {}
    for status in parsed.statuses:
        try:
            verdicts[status.entry_id] = Verdict(status.status.upper())
        except ValueError:
            log.warning("unknown status %r for entry %s from the app: redelivering it", status.status, status.entry_id)
            verdicts[status.entry_id] = Verdict.RETRY
    return verdicts
