"""Connecting at start-up with retries and exponential backoff, failing with a clear message."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ottava_sidecar.components.backends.options import RetryMetadata
from ottava_sidecar.components.errors import ComponentError

log = logging.getLogger(__name__)

T = TypeVar("T")


class CredentialsError(ComponentError):
    """The server refused the credentials: retrying would not help."""


async def connect(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    settings: RetryMetadata,
    *,
    refused_credentials: Callable[[BaseException], bool] = lambda err: False,
) -> T:
    """Call `attempt` until it succeeds, `settings.connect_attempts` times at most.

    `what` names the server ("redis at 10.0.0.5:6379") in the error. Refused credentials
    fail at once: a wrong password does not become right by waiting.
    """
    delays = settings.connection_backoff().delays()
    for number in range(1, settings.connect_attempts + 1):
        try:
            return await asyncio.wait_for(attempt(), timeout=settings.dial_timeout)
        except TimeoutError:
            reason = f"no answer within {settings.dial_timeout:g}s"
        except Exception as err:
            if refused_credentials(err):
                raise CredentialsError(f"{what} refused the credentials: {_text(err)}") from None
            reason = _text(err)
        if number == settings.connect_attempts:
            break
        log.warning("cannot connect to %s (attempt %d of %d): %s", what, number, settings.connect_attempts, reason)
        await asyncio.sleep(next(delays))
    noun = "attempt" if settings.connect_attempts == 1 else "attempts"
    raise ComponentError(f"cannot connect to {what} after {settings.connect_attempts} {noun}: {reason}")


def _text(err: BaseException) -> str:
    return str(err) or type(err).__name__
