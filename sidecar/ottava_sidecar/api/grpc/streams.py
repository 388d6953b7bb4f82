"""Serving a pub/sub stream subscription over a bidirectional gRPC call (Dapr's and Layotto's).

The app's first message subscribes; then events flow out and the app's verdicts flow in,
each naming the event id. The subscription ends when the app closes its side or the call
is cancelled.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from ottava_sidecar.messaging.cloudevents import TopicEvent
from ottava_sidecar.messaging.streams import StreamClosedError, StreamSubscription
from ottava_sidecar.messaging.subscriptions import Verdict

Out = TypeVar("Out")

VERDICTS = {0: Verdict.SUCCESS, 1: Verdict.RETRY, 2: Verdict.DROP}


async def serve_stream(
    stream: StreamSubscription,
    requests: AsyncIterator[Any],
    read_verdict: Callable[[Any], tuple[str, Verdict] | None],
    to_message: Callable[[TopicEvent], Out],
) -> AsyncIterator[Out]:
    """Yield each event as `to_message` builds it, while settling the verdicts read from `requests`."""

    async def read_verdicts() -> None:
        async for request in requests:
            answer = read_verdict(request)
            if answer is not None:
                stream.answer(*answer)

    reader = asyncio.create_task(read_verdicts())
    next_event: asyncio.Task[TopicEvent] = asyncio.create_task(stream.next_event())
    try:
        while True:
            await asyncio.wait({reader, next_event}, return_when=asyncio.FIRST_COMPLETED)
            if next_event.done():
                try:
                    event = next_event.result()
                except StreamClosedError:
                    return  # the sidecar is stopping
                yield to_message(event)
                next_event = asyncio.create_task(stream.next_event())
                continue
            reader.result()  # raises what ended the app's side abnormally
            return
    finally:
        for task in (reader, next_event):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.gather(reader, next_event, return_exceptions=True)
