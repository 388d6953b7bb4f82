"""`file.s3`: files as objects of one bucket on Amazon S3 or any S3-compatible server.

A file's name is its object key. Uploads of up to `partSize` bytes are one PUT; longer
ones are a multipart upload, part by part as the chunks arrive, so the sidecar holds at
most one part; an upload that fails midway is aborted, leaving nothing. Downloads read
the GET response's body chunk by chunk. Metadata sent with PutFile becomes the object's
user metadata (`x-amz-meta-*`) and comes back in GetFileMeta.
"""

import asyncio
import contextlib
import email.utils
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from datetime import datetime
from typing import TypeVar

import aiohttp
import yarl
from pydantic import Field

from ottava_sidecar.components.backends import retry
from ottava_sidecar.components.backends.options import RetryMetadata
from ottava_sidecar.components.errors import AccessDeniedError, ComponentError
from ottava_sidecar.components.file import s3api
from ottava_sidecar.components.file.base import (
    CHUNK_BYTES,
    DEFAULT_PAGE_SIZE,
    FileInfo,
    FileMeta,
    FileMissingError,
    FileStore,
    Page,
    timestamp,
)
from ottava_sidecar.components.registration import register

T = TypeVar("T")

_MIN_PART_BYTES = 5 * 1024 * 1024  # S3's least part size (but for the last part)
_USER_METADATA = "x-amz-meta-"


class S3FileMetadata(RetryMetadata):
    bucket: str = Field(min_length=1, description="The bucket that holds the files (it must exist).")
    endpoint: str = Field(
        default="",
        description="URL of the S3 API, e.g. `http://127.0.0.1:9000`; empty: Amazon S3 in `region`.",
    )
    region: str = Field(default="us-east-1", min_length=1, description="The region that requests are signed for.")
    access_key_id: str = Field(default="", alias="accessKeyID", description="Access key id.")
    secret_access_key: str = Field(default="", alias="secretAccessKey", description="Secret access key.")
    session_token: str = Field(default="", alias="sessionToken", description="Session token of temporary credentials.")
    force_path_style: bool = Field(
        default=False,
        alias="forcePathStyle",
        description="Address the bucket in the path (`endpoint/bucket/key`), as most S3-compatible servers need.",
    )
    part_size: int = Field(
        default=8 * 1024 * 1024,
        alias="partSize",
        ge=_MIN_PART_BYTES,
        le=1024 * 1024 * 1024,
        description="Bytes per part of a multipart upload (at least 5 MiB), and the most an upload holds in memory.",
    )
    timeout_seconds: float = Field(
        default=60.0, alias="timeoutSeconds", gt=0, description="Longest wait for the server's next bytes."
    )


def _iso_timestamp(text: str) -> str:
    try:
        return timestamp(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        return text


def _http_timestamp(text: str) -> str:
    try:
        return timestamp(email.utils.parsedate_to_datetime(text))
    except (TypeError, ValueError):
        return text


@register("file.s3", S3FileMetadata)
class S3FileStore(FileStore[S3FileMetadata]):
    """Files as objects of an S3 bucket (Amazon S3 or an S3-compatible server)."""

    def __init__(self, name: str, settings: S3FileMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self._s3: s3api.S3Client | None = None

    @property
    def root(self) -> str:
        return f"bucket {self.settings.bucket}"

    @property
    def _client(self) -> s3api.S3Client:
        if self._s3 is None:
            raise ComponentError(f"file store {self.name} is closed")
        return self._s3

    async def init(self) -> None:
        settings = self.settings
        endpoint = settings.endpoint or f"https://s3.{settings.region}.amazonaws.com"
        try:
            self._s3 = s3api.S3Client(
                endpoint,
                settings.region,
                settings.bucket,
                s3api.S3Credentials(settings.access_key_id, settings.secret_access_key, settings.session_token),
                path_style=settings.force_path_style,
                timeout=aiohttp.ClientTimeout(sock_connect=10, sock_read=settings.timeout_seconds),
            )
        except ValueError as err:
            raise ComponentError(str(err)) from None
        where = f"s3 at {yarl.URL(endpoint).raw_authority}"

        async def reach() -> s3api.S3Error | None:
            """None when the bucket answers; the server's refusal when it answers no (not worth retrying)."""
            try:
                await self._client.head_bucket()
            except s3api.S3Error as err:
                if err.status == 403:
                    raise  # refused credentials: retry.connect fails at once
                return err
            return None

        refusal = await retry.connect(
            where, reach, settings, refused_credentials=lambda err: isinstance(err, s3api.S3Error) and err.status == 403
        )
        if refusal is not None:
            missing = refusal.status == 404
            raise ComponentError(
                f"bucket {settings.bucket} does not exist at {where}"
                if missing
                else f"{where} refused bucket {settings.bucket}: {refusal}"
            )

    async def close(self) -> None:
        if self._s3 is not None:
            await self._s3.close()
            self._s3 = None

    async def _call(self, doing: str, key: str, operation: Awaitable[T]) -> T:
        """Await one S3 operation; its failure becomes the component error that names key and bucket."""
        try:
            return await operation
        except s3api.S3Error as err:
            raise self._failure(doing, key, err) from None
        except (OSError, aiohttp.ClientError) as err:
            raise ComponentError(
                f"cannot {doing} {key or 'bucket'} in {self.root} at {self._endpoint}: {err}"
            ) from None

    @property
    def _endpoint(self) -> str:
        return self.settings.endpoint or f"Amazon S3 ({self.settings.region})"

    def _failure(self, doing: str, key: str, err: s3api.S3Error) -> ComponentError:
        what = f"{key} in {self.root}" if key else self.root
        if err.status == 404 and key and err.code in ("NoSuchKey", "NotFound"):
            return FileMissingError(f"file {key} does not exist in {self.root}")
        if err.status == 403:
            return AccessDeniedError(f"cannot {doing} {what}: S3 refused the credentials ({err})")
        return ComponentError(f"cannot {doing} {what}: {err}")

    async def get(self, name: str, metadata: Mapping[str, str]) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._client.get_object(name, CHUNK_BYTES):
                yield chunk
        except s3api.S3Error as err:
            raise self._failure("read", name, err) from None
        except (OSError, aiohttp.ClientError) as err:
            raise ComponentError(f"cannot read {name} in {self.root} at {self._endpoint}: {err}") from None

    async def put(self, name: str, chunks: AsyncIterator[bytes], metadata: Mapping[str, str]) -> None:
        headers = {f"{_USER_METADATA}{k.lower()}": v for k, v in metadata.items()}
        part = _Part(self.settings.part_size)
        upload_id = ""
        etags: list[str] = []
        try:
            async for chunk in chunks:
                for full in part.add(chunk):
                    if not upload_id:
                        upload_id = await self._create(name, headers)
                    number = len(etags) + 1
                    etags.append(
                        await self._call("upload", name, self._client.upload_part(name, upload_id, number, full))
                    )
            if not upload_id:  # it all fitted in one part: one PUT
                await self._call("upload", name, self._client.put_object(name, part.rest(), headers))
                return
            if part.held:
                number = len(etags) + 1
                etags.append(
                    await self._call("upload", name, self._client.upload_part(name, upload_id, number, part.rest()))
                )
            await self._call("upload", name, self._client.complete_multipart_upload(name, upload_id, etags))
            upload_id = ""
        finally:
            if upload_id:  # the stream or a part failed: drop the parts sent so far
                await self._abort(name, upload_id)

    async def _create(self, name: str, headers: dict[str, str]) -> str:
        """Start a multipart upload. A caller that goes away meanwhile (its stream broke, and
        the call is cancelled) must still learn the upload's id, or nothing could abort it."""
        creating = asyncio.ensure_future(
            self._call("upload", name, self._client.create_multipart_upload(name, headers))
        )
        try:
            upload_id: str = await asyncio.shield(creating)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self._abort(name, await creating)
            raise
        return upload_id

    async def _abort(self, name: str, upload_id: str) -> None:
        # If this fails too, the server expires the parts; the first failure is the one to report.
        with contextlib.suppress(ComponentError):
            await self._call("abort the upload of", name, self._client.abort_multipart_upload(name, upload_id))

    async def list(self, directory: str, page_size: int, marker: str, metadata: Mapping[str, str]) -> Page:
        prefix = f"{directory}/" if directory else ""
        listing = await self._call(
            "list", prefix, self._client.list_objects(prefix, page_size or DEFAULT_PAGE_SIZE, marker)
        )
        files = [
            FileInfo(o.key, o.size, _iso_timestamp(o.last_modified), {"etag": o.etag, "storageClass": o.storage_class})
            for o in listing.objects
        ]
        return Page(files, listing.continuation, listing.truncated)

    async def delete(self, name: str, metadata: Mapping[str, str]) -> None:
        # S3 deletes a missing key without a word; the API says NOT_FOUND, as for local files.
        await self._call("delete", name, self._client.head_object(name))
        await self._call("delete", name, self._client.delete_object(name))

    async def stat(self, name: str, metadata: Mapping[str, str]) -> FileMeta:
        headers: Mapping[str, str] = await self._call("read the metadata of", name, self._client.head_object(name))
        meta = {k[len(_USER_METADATA) :]: [v] for k, v in headers.items() if k.startswith(_USER_METADATA)}
        for header in ("etag", "content-type", "x-amz-storage-class", "x-amz-version-id"):
            if header in headers:
                meta[header] = [headers[header]]
        return FileMeta(
            int(headers.get("content-length", "0")), _http_timestamp(headers.get("last-modified", "")), meta
        )


class _Part:
    """The chunks of the part being gathered, kept as they came (not joined into one buffer)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pieces: list[bytes] = []
        self.held = 0

    def add(self, chunk: bytes) -> Iterator[list[bytes]]:
        """Take `chunk`; yield each part it fills (a chunk across a part's end is split there)."""
        while chunk:
            room = self.size - self.held
            if len(chunk) <= room:
                piece, chunk = chunk, b""
            else:
                with memoryview(chunk) as view:
                    piece, chunk = bytes(view[:room]), bytes(view[room:])
            self.pieces.append(piece)
            self.held += len(piece)
            if self.held == self.size:
                yield self.rest()

    def rest(self) -> list[bytes]:
        """The pieces gathered so far, handed over (the part starts again empty)."""
        pieces, self.pieces, self.held = self.pieces, [], 0
        return pieces
