"""`file.local`: files in a folder of the sidecar's machine, confined to it (as Dapr's bindings.localstorage).

The folder is `rootPath`. Every name is checked twice: as text (no `..`, not absolute:
`base.check_name`) and, on the disk, by resolving symlinks, so a link inside the root
that points out of it is refused as well. Uploads go to a hidden file beside the target
and are renamed over it once the last chunk is written, so readers see the old file or
the new one, never half of one, and a broken upload leaves nothing. Disk IO runs in
threads (`asyncio.to_thread`), one chunk at a time.
"""

import asyncio
import os
import stat
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from pydantic import Field

from ottava_sidecar.components.base import ComponentMetadata
from ottava_sidecar.components.errors import ComponentError
from ottava_sidecar.components.file.base import (
    CHUNK_BYTES,
    DEFAULT_PAGE_SIZE,
    FileInfo,
    FileMeta,
    FileMissingError,
    FileNameError,
    FileStore,
    Page,
    timestamp,
)
from ottava_sidecar.components.registration import register

_UPLOAD_PREFIX = ".ottava-upload-"  # unfinished uploads: never listed


class LocalFileStoreMetadata(ComponentMetadata):
    root_path: str = Field(
        alias="rootPath",
        min_length=1,
        description="The folder that holds the files; created if missing. No name reaches outside it.",
    )


def _modified(info: os.stat_result) -> str:
    return timestamp(datetime.fromtimestamp(info.st_mtime, UTC))


@register("file.local", LocalFileStoreMetadata)
class LocalFileStore(FileStore[LocalFileStoreMetadata]):
    """Files in a local folder, `rootPath`; names that lead out of it are refused."""

    def __init__(self, name: str, settings: LocalFileStoreMetadata, *, app_id: str) -> None:
        super().__init__(name, settings, app_id=app_id)
        self._root = Path(settings.root_path)

    @property
    def root(self) -> str:
        return str(self._root)

    async def init(self) -> None:
        try:
            await asyncio.to_thread(self._root.mkdir, parents=True, exist_ok=True)
            self._root = await asyncio.to_thread(self._root.resolve, strict=True)
        except OSError as err:
            raise ComponentError(f"cannot use rootPath {self.settings.root_path}: {err.strerror or err}") from None
        if not self._root.is_dir():
            raise ComponentError(f"rootPath {self.settings.root_path} is not a folder")

    def _confined(self, name: str) -> Path:
        """The path of `name`, with every symlink on the way resolved, or FileNameError if that leaves the root."""
        resolved = (self._root / name).resolve()
        if resolved != self._root and not resolved.is_relative_to(self._root):
            raise FileNameError(f"file name {name!r} leads outside the root {self._root}: it resolves to {resolved}")
        return resolved

    async def get(self, name: str, metadata: Mapping[str, str]) -> AsyncIterator[bytes]:
        file = await asyncio.to_thread(self._open_for_reading, name)
        try:
            while chunk := await asyncio.to_thread(file.read, CHUNK_BYTES):
                yield chunk
        finally:
            await asyncio.to_thread(file.close)

    def _open_for_reading(self, name: str) -> BinaryIO:
        path = self._confined(name)
        try:
            file = path.open("rb")
        except FileNotFoundError:
            raise FileMissingError(f"file {name} does not exist under {self._root}") from None
        except IsADirectoryError:
            raise FileMissingError(f"file {name} does not exist under {self._root} (a folder has that name)") from None
        except OSError as err:
            raise ComponentError(f"cannot read {name} under {self._root}: {err.strerror}") from None
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            file.close()
            raise ComponentError(f"{name} under {self._root} is not a regular file")
        return file

    async def put(self, name: str, chunks: AsyncIterator[bytes], metadata: Mapping[str, str]) -> None:
        upload = await asyncio.to_thread(self._open_upload, name)
        done = False
        try:
            async for chunk in chunks:
                await asyncio.to_thread(upload.file.write, chunk)
            await asyncio.to_thread(upload.finish)
            done = True
        except OSError as err:
            raise ComponentError(f"cannot write {name} under {self._root}: {err.strerror or err}") from None
        finally:
            if not done:
                await asyncio.to_thread(upload.discard)

    def _open_upload(self, name: str) -> "_Upload":
        target = self._confined(name)
        if target.is_dir():
            raise ComponentError(f"{name} is a folder under {self._root}; a file cannot replace it")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # The folders just made may not be symlinks, but one may have raced in: check again.
            self._confined(str(target.parent.relative_to(self._root)))
            descriptor, temporary = tempfile.mkstemp(prefix=_UPLOAD_PREFIX, dir=target.parent)
        except OSError as err:
            raise ComponentError(f"cannot write {name} under {self._root}: {err.strerror or err}") from None
        return _Upload(os.fdopen(descriptor, "wb"), Path(temporary), target)

    async def list(self, directory: str, page_size: int, marker: str, metadata: Mapping[str, str]) -> Page:
        return await asyncio.to_thread(self._list, directory, page_size or DEFAULT_PAGE_SIZE, marker)

    def _list(self, directory: str, page_size: int, marker: str) -> Page:
        folder = self._confined(directory) if directory else self._root
        prefix = f"{directory}/" if directory else ""
        try:
            with os.scandir(folder) as entries:
                names = sorted(
                    e.name
                    for e in entries
                    if e.is_file(follow_symlinks=False) and not e.name.startswith(_UPLOAD_PREFIX)
                )
        except FileNotFoundError:
            names = []  # as in an object store: a folder with no files is no folder
        except NotADirectoryError:
            raise ComponentError(f"{directory} is a file under {self._root}, not a folder") from None
        # The marker is the last name of the previous page (without the folder); names sort.
        after = [n for n in names if n > marker] if marker else names
        page = after[:page_size]
        files = []
        for entry in page:
            try:
                info = os.stat(folder / entry, follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted since the scan
            files.append(FileInfo(prefix + entry, info.st_size, _modified(info)))
        truncated = len(after) > page_size
        return Page(files, page[-1] if truncated else "", truncated)

    async def delete(self, name: str, metadata: Mapping[str, str]) -> None:
        await asyncio.to_thread(self._delete, name)

    def _delete(self, name: str) -> None:
        self._confined(name)
        try:
            (self._root / name).unlink()  # a symlink itself, not what it points at
        except FileNotFoundError:
            raise FileMissingError(f"file {name} does not exist under {self._root}") from None
        except IsADirectoryError:
            raise FileMissingError(f"file {name} does not exist under {self._root} (a folder has that name)") from None
        except OSError as err:
            raise ComponentError(f"cannot delete {name} under {self._root}: {err.strerror}") from None

    async def stat(self, name: str, metadata: Mapping[str, str]) -> FileMeta:
        return await asyncio.to_thread(self._stat, name)

    def _stat(self, name: str) -> FileMeta:
        path = self._confined(name)
        try:
            info = path.stat()
        except FileNotFoundError:
            raise FileMissingError(f"file {name} does not exist under {self._root}") from None
        if stat.S_ISDIR(info.st_mode):
            raise FileMissingError(f"file {name} does not exist under {self._root} (a folder has that name)")
        if not stat.S_ISREG(info.st_mode):
            raise ComponentError(f"{name} under {self._root} is not a regular file")
        return FileMeta(info.st_size, _modified(info), {"mode": [oct(stat.S_IMODE(info.st_mode))]})


@dataclass
class _Upload:
    """A file being written beside its target, under a hidden name, until it is renamed over it."""

    file: BinaryIO
    temporary: Path
    target: Path

    def finish(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.temporary.chmod(0o644)  # mkstemp makes it 0600; a stored file reads like any other
        self.temporary.replace(self.target)

    def discard(self) -> None:
        self.file.close()
        self.temporary.unlink(missing_ok=True)
