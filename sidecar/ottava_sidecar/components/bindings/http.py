"""`bindings.http`: Dapr's HTTP output binding — call one HTTP endpoint.

The operation is the HTTP method (`create` is POST); the request's `path` metadata is
appended to `url`; metadata whose name starts with a capital letter is sent as a
header (Dapr's rule). The answer is the response body, with `statusCode`, `status` and
the response headers as metadata. A status outside 2xx is an error naming it.
"""

from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from ottava_sidecar.components.backends.options import Seconds
from ottava_sidecar.components.bindings.base import (
    BindingMetadata,
    BindingRequest,
    BindingResponse,
    OutputBinding,
)
from ottava_sidecar.components.errors import ComponentError
from ottava_sidecar.components.registration import register

if TYPE_CHECKING:
    import aiohttp

_METHODS = {
    "create": "POST",
    "get": "GET",
    "head": "HEAD",
    "post": "POST",
    "put": "PUT",
    "patch": "PATCH",
    "delete": "DELETE",
    "options": "OPTIONS",
    "trace": "TRACE",
}
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "upgrade", "host", "content-length"})


class HttpBindingMetadata(BindingMetadata):
    url: str = Field(alias="url", description="Base URL of the endpoint; the request's `path` is appended.")
    response_timeout: Seconds = Field(
        default=30.0, gt=0, alias="responseTimeout", description="How long one call may take, e.g. 10s."
    )
    max_response_body_size: int = Field(
        default=100 * 1024 * 1024,
        gt=0,
        alias="maxResponseBodySize",
        description="Largest response body read, in bytes; a larger one is an error.",
    )

    @field_validator("url")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


@register("bindings.http", HttpBindingMetadata)
class HttpBinding(OutputBinding[HttpBindingMetadata]):
    """One HTTP endpoint: each operation is an HTTP method, `path` metadata extends the URL."""

    operations = tuple(_METHODS)

    def __init__(self, name: str, settings: HttpBindingMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self._session: aiohttp.ClientSession | None = None

    async def init(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.response_timeout), auto_decompress=True
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _url(self, request: BindingRequest) -> str:
        path = request.metadata.get("path", "")
        if not path:
            return self.settings.url
        return f"{self.settings.url.rstrip('/')}/{path.lstrip('/')}"

    async def invoke(self, request: BindingRequest) -> BindingResponse:
        import aiohttp

        if self._session is None:
            raise ComponentError(f"binding {self.name} is closed")
        method = _METHODS[request.operation]
        headers = {k: v for k, v in request.metadata.items() if k[:1].isupper()}
        if request.data and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
        url = self._url(request)
        limit = self.settings.max_response_body_size
        try:
            async with self._session.request(method, url, data=request.data or None, headers=headers) as response:
                body = await response.content.read(limit + 1)
                if len(body) > limit:
                    raise ComponentError(f"{method} {url} answered more than maxResponseBodySize ({limit} bytes)")
                metadata = {
                    k: ", ".join(response.headers.getall(k)) for k in response.headers if k.lower() not in _HOP_BY_HOP
                }
                metadata["statusCode"] = str(response.status)
                metadata["status"] = f"{response.status} {response.reason or ''}".strip()
                status = response.status
        except TimeoutError:
            raise ComponentError(f"{method} {url} got no answer in {self.settings.response_timeout}s") from None
        except aiohttp.ClientError as err:
            raise ComponentError(f"{method} {url} failed: {err}") from None
        if not 200 <= status < 300:
            raise ComponentError(f"{method} {url} answered {status}: {body[:200]!r}")
        return BindingResponse(body, metadata)
