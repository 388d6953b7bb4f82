"""Interface of file stores (Layotto's GetFile, PutFile, ListFile, DelFile, GetFileMeta).

Files travel as streams of chunks both ways, so no implementation ever holds a whole
file: `get` yields chunks of at most `CHUNK_BYTES`, `put` consumes the chunks the app
sends, one at a time. Names are relative paths with `/` between segments; the API layer
checks them (`check_name`) before a store sees them, so every store gets the same names
and a name that works on one works on the others.
"""

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from ottava_sidecar.components.base import ComponentInstance, ComponentMetadata
from ottava_sidecar.components.errors import ComponentError

__all__ = [
    "CHUNK_BYTES",
    "FileInfo",
    "FileMeta",
    "FileMissingError",
    "FileNameError",
    "FileStore",
    "Page",
    "check_name",
    "timestamp",
]

# One chunk of a download: well under the 4 MiB default message limit of the gRPC port,
# large enough that a GiB costs a thousand messages, not a million.
CHUNK_BYTES = 1024 * 1024
DEFAULT_PAGE_SIZE = 1000  # as S3's ListObjectsV2


class FileMissingError(ComponentError):
    """The file does not exist in the store."""


class FileNameError(ComponentError):
    """The name does not stay inside the store's root (`..`, absolute, a symlink out)."""


@dataclass(frozen=True)
class FileInfo:
    """One entry of a listing; `name` is its full path in the store, usable with `get`."""

    name: str
    size: int
    last_modified: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FileMeta:
    size: int
    last_modified: str
    metadata: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    """One page of a listing; `marker` is opaque: passed back, it continues after this page."""

    files: list[FileInfo]
    marker: str
    truncated: bool


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC, to the second: what every store reports as `last_modified`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_name(name: str, root: str, *, directory: bool = False) -> str:
    """The name as stores use it, or FileNameError naming it and the root.

    A directory may be empty (the root itself) and may end with `/`; a file may not.
    """
    if "\x00" in name:
        raise FileNameError(f"file name {name!r} contains a NUL character (root {root})")
    if directory:
        name = name.rstrip("/")
        if not name:
            return ""
    if not name:
        raise FileNameError(f"file name is empty (root {root})")
    if name.startswith("/"):
        raise FileNameError(
            f"file name {name!r} is absolute: names are relative paths inside the root {root}, which holds them"
        )
    segments = name.split("/")
    if ".." in segments:
        raise FileNameError(f"file name {name!r} leads outside the root {root}: '..' is not allowed in a name")
    if "." in segments or "" in segments:
        raise FileNameError(f"file name {name!r} has an empty or '.' segment (root {root})")
    return name


SettingsT = TypeVar("SettingsT", bound=ComponentMetadata)


class FileStore(ComponentInstance[SettingsT]):
    """A store of files by name. Failures are `ComponentError`s; a missing file is `FileMissingError`."""

    @property
    def root(self) -> str:
        """How messages name where this store's files live ("/srv/files", "bucket media")."""
        raise NotImplementedError

    def get(self, name: str, metadata: Mapping[str, str]) -> AsyncIterator[bytes]:
        """The file's bytes in chunks of at most CHUNK_BYTES; FileMissingError before the first one."""
        raise NotImplementedError

    async def put(self, name: str, chunks: AsyncIterator[bytes], metadata: Mapping[str, str]) -> None:
        """Store the file whole from `chunks`, replacing any file of that name.

        Until the last chunk has arrived the old file (or none) stays visible; a stream
        that fails midway leaves nothing behind.
        """
        raise NotImplementedError

    async def list(self, directory: str, page_size: int, marker: str, metadata: Mapping[str, str]) -> Page:
        """The files directly in `directory` ("" = the root), in name order, after `marker`."""
        raise NotImplementedError

    async def delete(self, name: str, metadata: Mapping[str, str]) -> None:
        raise NotImplementedError

    async def stat(self, name: str, metadata: Mapping[str, str]) -> FileMeta:
        raise NotImplementedError
