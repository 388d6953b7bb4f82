"""`bindings.localstorage`: files under one folder, Dapr's output binding of that name.

Every path is relative to `rootPath` and stays inside it: an absolute `fileName`, one
with a `..` component, or one that resolves (through a symbolic link) outside the root
is refused, naming the path and the root. File I/O runs in a thread, off the event loop.
"""

import asyncio
import base64
import binascii
import json
import os
import uuid
from pathlib import Path, PurePosixPath

from pydantic import Field

from ottava_sidecar.components.bindings.base import (
    BindingMetadata,
    BindingNotFoundError,
    BindingRequest,
    BindingRequestError,
    BindingResponse,
    OutputBinding,
)
from ottava_sidecar.components.errors import ComponentError
from ottava_sidecar.components.registration import register

FILE_NAME = "fileName"
_PARTIAL = ".ottava-partial"  # a file being written; list leaves it out


class LocalStorageMetadata(BindingMetadata):
    root_path: str = Field(alias="rootPath", min_length=1, description="The folder that holds the files.")
    decode_base64: bool = Field(
        default=True,
        alias="decodeBase64",
        description="create stores data that is valid base64 decoded, as Dapr does (so binary files travel "
        'in JSON); "false" stores every payload as sent.',
    )


def _looks_base64(data: bytes) -> bytes:
    """Dapr's localstorage stores base64 text decoded (so binary files can travel in JSON)."""
    stripped = data.strip()
    if not stripped or len(stripped) % 4:
        return data
    try:
        return base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        return data


@register("bindings.localstorage", LocalStorageMetadata)
class LocalStorageBinding(OutputBinding[LocalStorageMetadata]):
    """Files under `rootPath`: create, get, list and delete them by `fileName`."""

    operations = ("create", "get", "list", "delete")

    async def init(self) -> None:
        root = Path(self.settings.root_path)
        try:
            await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
        except OSError as err:
            raise ComponentError(f"binding {self.name}: cannot use rootPath {root}: {err.strerror}") from None
        self.root = await asyncio.to_thread(root.resolve)

    def path(self, file_name: str) -> Path:
        """`file_name` under the root; refused when it is absolute, climbs with `..`, or leaves the root."""
        where = f"fileName {file_name!r} of binding {self.name}"
        pure = PurePosixPath(file_name)
        if pure.is_absolute() or file_name.startswith("\\") or (len(file_name) > 1 and file_name[1] == ":"):
            raise BindingRequestError(f"{where} is an absolute path; it must be relative to rootPath {self.root}")
        if ".." in pure.parts or "\x00" in file_name:
            raise BindingRequestError(f"{where} leaves rootPath {self.root} (it contains '..')")
        resolved = (self.root / pure).resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise BindingRequestError(f"{where} resolves outside rootPath {self.root}")
        return resolved

    def _named(self, request: BindingRequest) -> str:
        name = request.metadata.get(FILE_NAME, "")
        if not name:
            raise BindingRequestError(f"binding {self.name}: operation {request.operation} needs metadata {FILE_NAME}")
        return name

    async def invoke(self, request: BindingRequest) -> BindingResponse:
        if request.operation == "create":
            name = request.metadata.get(FILE_NAME) or str(uuid.uuid4())
            path = await asyncio.to_thread(self.path, name)
            await asyncio.to_thread(
                _write, path, _looks_base64(request.data) if self.settings.decode_base64 else request.data
            )
            return BindingResponse(json.dumps({FILE_NAME: name}).encode())
        if request.operation == "list":
            folder = await asyncio.to_thread(self.path, request.metadata.get(FILE_NAME, "") or ".")
            names = await asyncio.to_thread(_list, folder, self.root)
            return BindingResponse(json.dumps(names).encode())
        name = self._named(request)
        path = await asyncio.to_thread(self.path, name)
        try:
            if request.operation == "get":
                return BindingResponse(await asyncio.to_thread(path.read_bytes))
            await asyncio.to_thread(path.unlink)
            return BindingResponse()
        except FileNotFoundError:
            raise BindingNotFoundError(f"file {name!r} not found in binding {self.name}") from None
        except IsADirectoryError:
            raise BindingRequestError(f"{name!r} is a folder in binding {self.name}, not a file") from None
        except OSError as err:
            raise ComponentError(f"binding {self.name}: {request.operation} {name!r}: {err.strerror}") from None


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}{_PARTIAL}")
    temporary.write_bytes(data)
    os.replace(temporary, path)  # a reader sees the old file or the new one, never half of it


def _list(folder: Path, root: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(
        str(Path(parent, name).relative_to(root))
        for parent, _, files in os.walk(folder)
        for name in files
        if not name.endswith(_PARTIAL)
    )
