"""The few S3 operations `file.s3` needs, signed with AWS Signature Version 4, over aiohttp.

Why not an SDK: aiohttp is already the sidecar's HTTP client, and these seven
operations with their signature are about two hundred lines; aiobotocore would bring
botocore (tens of MB, a slow import, and a pin on aiohttp's version) for them. Here the
streaming is in plain sight too: a download is the response body read chunk by chunk,
an upload is parts of `partSize` bytes, each hashed and sent, one at a time.
"""

import datetime
import hashlib
import hmac
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from xml.etree import ElementTree

import aiohttp
import yarl

_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_UNRESERVED = "-_.~"


class S3Error(Exception):
    """An error answer of the server: `status` and S3's `code` ("NoSuchKey", "AccessDenied", …)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code or status}: {message}" if message else f"{code or status}")
        self.status = status
        self.code = code


@dataclass(frozen=True)
class S3Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str = ""


@dataclass(frozen=True)
class ObjectSummary:
    key: str
    size: int
    last_modified: str  # as the server wrote it (ISO 8601)
    etag: str
    storage_class: str


@dataclass(frozen=True)
class Listing:
    objects: list[ObjectSummary]
    truncated: bool
    continuation: str


def _quote(text: str, safe: str = _UNRESERVED) -> str:
    return urllib.parse.quote(text, safe=safe)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sign(
    method: str,
    host: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    payload_sha256: str,
    region: str,
    credentials: S3Credentials,
    now: datetime.datetime | None = None,
) -> dict[str, str]:
    """The request's headers with its SigV4 signature (`authorization`), `host` among them.

    `path` and `query` are sent exactly as given, so they are already percent-encoded
    the way the canonical request wants them (S3 does not encode paths twice).
    """
    amz_date = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    signed = {k.lower(): " ".join(v.split()) for k, v in headers.items()}
    signed |= {"host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload_sha256}
    if credentials.session_token:
        signed["x-amz-security-token"] = credentials.session_token
    names = sorted(signed)
    canonical = "\n".join(
        [method, path, query, "".join(f"{n}:{signed[n]}\n" for n in names), ";".join(names), payload_sha256]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(("AWS4" + credentials.secret_access_key).encode(), day)
    for part in (region, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    signed["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return signed


class S3Client:
    """One bucket on one S3-compatible endpoint."""

    def __init__(
        self,
        endpoint: str,
        region: str,
        bucket: str,
        credentials: S3Credentials,
        *,
        path_style: bool,
        timeout: aiohttp.ClientTimeout,
    ) -> None:
        url = yarl.URL(endpoint)
        if not url.scheme or not url.host:
            raise ValueError(f"endpoint {endpoint!r} is not a URL like https://s3.example.com")
        self.bucket = bucket
        self._region = region
        self._credentials = credentials
        self._path_style = path_style
        host = url.host if path_style else f"{bucket}.{url.host}"
        self._base = url.with_host(host).with_path("").with_query(None)
        self._host_header = self._base.raw_authority
        self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)

    async def close(self) -> None:
        await self._session.close()

    # --- requests ------------------------------------------------------------------

    def _path(self, key: str) -> str:
        object_path = "/" + _quote(key, _UNRESERVED + "/") if key else "/"
        return f"/{_quote(self.bucket)}{object_path}" if self._path_style else object_path

    async def _request(
        self,
        method: str,
        key: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Sequence[bytes] = (),
    ) -> aiohttp.ClientResponse:
        """The response, its body unread (close it); an error answer raises S3Error.

        The body is a list of pieces, sent one after the other, never joined: a part of
        8 MiB stays the pieces it arrived in, and the socket takes one piece at a time
        instead of an 8 MiB copy waiting in the transport's buffer.
        """
        path = self._path(key)
        query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted((params or {}).items()))
        digest = hashlib.sha256()
        for piece in body:
            digest.update(piece)
        signed = sign(
            method, self._host_header, path, query, headers or {}, digest.hexdigest(), self._region, self._credentials
        )
        del signed["host"]  # aiohttp writes it from the URL, the same text
        url = yarl.URL(f"{self._base}{path}" + (f"?{query}" if query else ""), encoded=True)
        data = None
        if body:
            signed["content-length"] = str(sum(len(piece) for piece in body))
            data = _pieces(body)
        response = await self._session.request(method, url, headers=signed, data=data)
        if response.status >= 300:
            async with response:
                raise await _error(response)
        return response

    # --- operations ----------------------------------------------------------------

    async def head_bucket(self) -> None:
        async with await self._request("HEAD", ""):
            pass

    async def get_object(self, key: str, chunk_bytes: int) -> AsyncIterator[bytes]:
        """The object's body, read from the socket a chunk at a time."""
        async with await self._request("GET", key) as response:
            # The socket gives pieces of a few KiB; the app gets chunks of `chunk_bytes`.
            held = bytearray()
            async for piece in response.content.iter_any():
                held += piece
                while len(held) >= chunk_bytes:
                    yield _take(held, chunk_bytes)
            if held:
                yield bytes(held)

    async def head_object(self, key: str) -> Mapping[str, str]:
        async with await self._request("HEAD", key) as response:
            return {k.lower(): v for k, v in response.headers.items()}

    async def put_object(self, key: str, body: Sequence[bytes], headers: Mapping[str, str]) -> None:
        async with await self._request("PUT", key, headers=headers, body=body):
            pass

    async def delete_object(self, key: str) -> None:
        async with await self._request("DELETE", key):
            pass

    async def create_multipart_upload(self, key: str, headers: Mapping[str, str]) -> str:
        async with await self._request("POST", key, params={"uploads": ""}, headers=headers) as response:
            document = ElementTree.fromstring(await response.read())
        return _text(document, "UploadId")

    async def upload_part(self, key: str, upload_id: str, number: int, body: Sequence[bytes]) -> str:
        params = {"partNumber": str(number), "uploadId": upload_id}
        async with await self._request("PUT", key, params=params, body=body) as response:
            return response.headers.get("ETag", "")

    async def complete_multipart_upload(self, key: str, upload_id: str, etags: list[str]) -> None:
        parts = "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>" for n, etag in enumerate(etags, 1)
        )
        body = f'<CompleteMultipartUpload xmlns="{_NS[1:-1]}">{parts}</CompleteMultipartUpload>'.encode()
        async with await self._request("POST", key, params={"uploadId": upload_id}, body=[body]) as response:
            # The server may answer 200 and then an error in the body, once the parts are joined.
            text = await response.read()
            if b"<Error>" in text[:200]:
                document = ElementTree.fromstring(text)
                raise S3Error(response.status, _text(document, "Code"), _text(document, "Message"))

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        async with await self._request("DELETE", key, params={"uploadId": upload_id}):
            pass

    async def list_objects(self, prefix: str, max_keys: int, continuation: str) -> Listing:
        """Objects directly under `prefix` (delimiter `/`), a page of at most `max_keys`."""
        params = {"list-type": "2", "prefix": prefix, "delimiter": "/", "max-keys": str(max_keys)}
        if continuation:
            params["continuation-token"] = continuation
        async with await self._request("GET", "", params=params) as response:
            document = ElementTree.fromstring(await response.read())
        objects = [
            ObjectSummary(
                key=_text(item, "Key"),
                size=int(_text(item, "Size") or 0),
                last_modified=_text(item, "LastModified"),
                etag=_text(item, "ETag"),
                storage_class=_text(item, "StorageClass"),
            )
            for item in document.iter(f"{_NS}Contents")
        ]
        truncated = _text(document, "IsTruncated") == "true"
        return Listing(objects, truncated, _text(document, "NextContinuationToken") if truncated else "")


def _take(buffer: bytearray, size: int) -> bytes:
    """The first `size` bytes of `buffer`, removed from it, copied once (not twice, as a slice would)."""
    with memoryview(buffer) as view:
        head = bytes(view[:size])
    del buffer[:size]
    return head


async def _pieces(body: Sequence[bytes]) -> AsyncIterator[bytes]:
    for piece in body:
        yield piece


def _text(element: ElementTree.Element, tag: str) -> str:
    found = element.find(f"{_NS}{tag}")
    if found is None:
        found = element.find(tag)  # error documents have no namespace
    return (found.text or "") if found is not None else ""


async def _error(response: aiohttp.ClientResponse) -> S3Error:
    body = await response.read()
    code, message = "", ""
    if body:
        try:
            document = ElementTree.fromstring(body)
            code, message = _text(document, "Code"), _text(document, "Message")
        except ElementTree.ParseError:
            message = body[:200].decode(errors="replace")
    if not code:
        code = {403: "AccessDenied", 404: "NotFound"}.get(response.status, f"HTTP {response.status}")
    return S3Error(response.status, code, message)
