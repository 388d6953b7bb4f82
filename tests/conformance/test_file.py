"""The file API's contract, run unchanged against every file store (file.local, file.s3).

A client generated from `proto/` (Layotto's `Runtime` stubs) drives a real sidecar
(`ottava run`) whose file store is the implementation under test, on its real server.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2 as pb
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2_grpc
from ottava_sidecar.components.errors import ComponentError

from tests.conformance.backends import S3_BUCKET
from tests.conformance.conftest import Components
from tests.conftest import SidecarFactory
from tests.servers import s3_server as s3_setup

BUILDING_BLOCK = "file"
STORE = "files"
MiB = 1024 * 1024


@dataclass
class Files:
    runtime: runtime_pb2_grpc.RuntimeAsyncStub
    folder: str  # this test's own folder in the store, so tests sharing a bucket never meet
    root: str  # how the store's errors name its root
    metadata: dict[str, str]
    components: Components

    def path(self, name: str) -> str:
        return f"{self.folder}/{name}"

    def target(self, name: str) -> pb.FileRequest:
        return pb.FileRequest(store_name=STORE, name=name)

    async def put(self, name: str, chunks: list[bytes], metadata: dict[str, str] | None = None) -> None:
        async def requests() -> AsyncIterator[pb.PutFileRequest]:
            for chunk in chunks:
                yield pb.PutFileRequest(store_name=STORE, name=name, data=chunk, metadata=metadata or {})

        await self.runtime.PutFile(requests())

    async def read(self, name: str) -> bytes:
        return b"".join([r.data async for r in self.runtime.GetFile(pb.GetFileRequest(store_name=STORE, name=name))])

    async def list(self, folder: str, page_size: int = 0, marker: str = "") -> pb.ListFileResp:
        return await self.runtime.ListFile(
            pb.ListFileRequest(request=self.target(folder), page_size=page_size, marker=marker)
        )


@pytest.fixture
async def files(components: Components, sidecars: SidecarFactory) -> AsyncIterator[Files]:
    metadata = components.metadata()
    manifest = {
        "apiVersion": "ottava.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": STORE},
        "spec": {"type": components.type_name, "metadata": [{"name": k, "value": v} for k, v in metadata.items()]},
    }
    sidecar = sidecars.start("--app-id", "files", resources={"files.yaml": yaml.safe_dump(manifest)})
    root = metadata.get("rootPath") or f"bucket {S3_BUCKET}"
    async with grpc.aio.insecure_channel(sidecar.grpc_address) as channel:
        yield Files(runtime_pb2_grpc.RuntimeStub(channel), f"t-{uuid.uuid4().hex[:10]}", root, metadata, components)


def content(size: int, seed: int) -> Iterator[bytes]:
    """`size` bytes of pseudo-random data in 1 MiB chunks, the same for the same seed."""
    generator = random.Random(seed)
    while size > 0:
        chunk = generator.randbytes(min(MiB, size))
        size -= len(chunk)
        yield chunk


async def test_a_100_mb_file_is_put_listed_read_back_byte_for_byte_and_deleted(type_name: str, files: Files) -> None:
    size, name = 100 * MiB, files.path("big.bin")
    await files.put(name, list(content(size, seed=16)))

    listing = await files.list(files.folder)
    assert [(f.file_name, f.size) for f in listing.files] == [(name, size)]
    meta = await files.runtime.GetFileMeta(pb.GetFileMetaRequest(request=files.target(name)))
    assert meta.size == size
    assert meta.last_modified.endswith("Z")

    expected = content(size, seed=16)
    pending = b""
    received = 0
    async for response in files.runtime.GetFile(pb.GetFileRequest(store_name=STORE, name=name)):
        assert 0 < len(response.data) <= MiB
        data = response.data
        while data:
            if not pending:
                pending = next(expected)
            take = min(len(pending), len(data))
            assert data[:take] == pending[:take], f"bytes differ after offset {received}"
            data, pending, received = data[take:], pending[take:], received + take
    assert received == size
    assert next(expected, None) is None and not pending

    await files.runtime.DelFile(pb.DelFileRequest(request=files.target(name)))
    assert list((await files.list(files.folder)).files) == []
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await files.read(name)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_put_replaces_a_file_and_an_empty_file_round_trips(type_name: str, files: Files) -> None:
    name = files.path("notes.txt")
    await files.put(name, [b"first ", b"version"])
    assert await files.read(name) == b"first version"
    await files.put(name, [b"second"])
    assert await files.read(name) == b"second"

    empty = files.path("empty")
    await files.put(empty, [b""])
    assert await files.read(empty) == b""
    meta = await files.runtime.GetFileMeta(pb.GetFileMetaRequest(request=files.target(empty)))
    assert meta.size == 0


async def test_listing_pages_through_a_folder_with_the_marker(type_name: str, files: Files) -> None:
    names = [files.path(f"f{i}.txt") for i in range(5)]
    for i, name in enumerate(names):
        await files.put(name, [b"x" * i])
    await files.put(files.path("sub/inner.txt"), [b"not directly in the folder"])

    pages: list[list[str]] = []
    marker = ""
    while True:
        page = await files.list(files.folder, page_size=2, marker=marker)
        pages.append([f.file_name for f in page.files])
        if not page.is_truncated:
            assert page.marker == ""
            break
        assert page.marker
        marker = page.marker
    assert [n for page in pages for n in page] == names
    assert [len(p) for p in pages] == [2, 2, 1]
    whole = await files.list(files.folder + "/")  # a trailing slash names the same folder
    assert [(f.file_name, f.size) for f in whole.files] == [(n, i) for i, n in enumerate(names)]
    assert [f.file_name for f in (await files.list(files.path("sub"))).files] == [files.path("sub/inner.txt")]
    assert list((await files.list(files.path("nothing-here"))).files) == []


async def test_a_missing_file_is_not_found_naming_it_and_the_store(type_name: str, files: Files) -> None:
    name = files.path("absent.txt")
    calls: dict[str, Awaitable[object]] = {
        "GetFile": files.read(name),
        "GetFileMeta": files.runtime.GetFileMeta(pb.GetFileMetaRequest(request=files.target(name))),
        "DelFile": files.runtime.DelFile(pb.DelFileRequest(request=files.target(name))),
    }
    for method, call in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND, method
        assert name in (err.value.details() or "") and f"file store {STORE}" in (err.value.details() or ""), method


async def test_a_folder_is_not_a_file(type_name: str, files: Files) -> None:
    await files.put(files.path("dir/inner.txt"), [b"inside"])
    name = files.path("dir")
    calls: dict[str, Awaitable[object]] = {
        "GetFile": files.read(name),
        "GetFileMeta": files.runtime.GetFileMeta(pb.GetFileMetaRequest(request=files.target(name))),
        "DelFile": files.runtime.DelFile(pb.DelFileRequest(request=files.target(name))),
    }
    for method, call in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND, method
    assert await files.read(files.path("dir/inner.txt")) == b"inside"


@pytest.mark.parametrize("name", ["../escape.txt", "a/../../escape.txt", "/etc/passwd", "a/./b", "a//b", "a\x00b"])
async def test_a_name_outside_the_root_is_refused_naming_it_and_the_root(
    type_name: str, files: Files, name: str
) -> None:
    async def one_chunk() -> AsyncIterator[pb.PutFileRequest]:
        yield pb.PutFileRequest(store_name=STORE, name=name, data=b"never written")

    calls: dict[str, Awaitable[object]] = {
        "PutFile": files.runtime.PutFile(one_chunk()),
        "GetFile": files.read(name),
        "GetFileMeta": files.runtime.GetFileMeta(pb.GetFileMetaRequest(request=files.target(name))),
        "DelFile": files.runtime.DelFile(pb.DelFileRequest(request=files.target(name))),
        "ListFile": files.list(name),
    }
    for method, call in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        details = err.value.details() or ""
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, details)
        assert repr(name) in details and files.root in details and f"file store {STORE}" in details, (method, details)


async def test_an_upload_that_breaks_off_leaves_the_old_file(type_name: str, files: Files) -> None:
    name = files.path("kept.bin")
    await files.put(name, [b"the old content"])

    async def broken() -> AsyncIterator[pb.PutFileRequest]:
        for chunk in content(12 * MiB, seed=3):  # past one S3 part: a multipart upload is under way
            yield pb.PutFileRequest(store_name=STORE, name=name, data=chunk)
        raise ConnectionResetError("the app lost its data source")

    call = files.runtime.PutFile(broken())
    with pytest.raises((grpc.aio.AioRpcError, asyncio.CancelledError, ConnectionResetError)):
        await call
    assert await files.read(name) == b"the old content"
    assert [f.file_name for f in (await files.list(files.folder)).files] == [name]
    # Nor is anything left behind: no half-written file on the disk, no open multipart upload.
    deadline = time.monotonic() + 10
    while leftovers := debris(type_name, files):
        assert time.monotonic() < deadline, f"the broken upload left {leftovers}"
        await asyncio.sleep(0.05)


def debris(type_name: str, files: Files) -> list[str]:
    """What an unfinished upload may leave in the store, where a user would find it."""
    if type_name == "file.local":
        return [str(p) for p in (Path(files.metadata["rootPath"]) / files.folder).iterdir() if p.name.startswith(".")]
    server = files.components.context.servers["s3_server"]
    return s3_setup.unfinished_uploads(server, S3_BUCKET, files.folder)


async def test_a_stream_that_switches_files_midway_is_refused(type_name: str, files: Files) -> None:
    async def two_files() -> AsyncIterator[pb.PutFileRequest]:
        yield pb.PutFileRequest(store_name=STORE, name=files.path("one"), data=b"1")
        yield pb.PutFileRequest(store_name=STORE, name=files.path("two"), data=b"2")

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await files.runtime.PutFile(two_files())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "one stream uploads one file" in (err.value.details() or "")
    assert list((await files.list(files.folder)).files) == []


@pytest.mark.only.with_args(lambda type_name: type_name == "file.local")
async def test_a_symlink_leading_out_of_the_root_is_refused(type_name: str, files: Files, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not for the app")
    folder = Path(files.metadata["rootPath"]) / files.folder
    folder.mkdir(parents=True)
    os.symlink(outside, folder / "door")
    name = files.path("door/secret.txt")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await files.read(name)
    details = err.value.details() or ""
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert repr(name) in details and files.root in details
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await files.put(files.path("door/planted.txt"), [b"x"])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not (outside / "planted.txt").exists()


@pytest.mark.only.with_args(lambda type_name: type_name == "file.s3")
async def test_metadata_sent_with_a_file_comes_back_with_its_meta(type_name: str, files: Files) -> None:
    name = files.path("tagged.txt")
    await files.put(name, [b"hello"], metadata={"owner": "billing"})
    meta = await files.runtime.GetFileMeta(pb.GetFileMetaRequest(request=files.target(name)))
    assert meta.size == 5
    assert list(meta.response.metadata["owner"].value) == ["billing"]
    assert meta.response.metadata["etag"].value[0].strip('"') == hashlib.md5(b"hello").hexdigest()


async def test_an_unknown_store_is_named(type_name: str, files: Files) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await files.runtime.GetFileMeta(pb.GetFileMetaRequest(request=pb.FileRequest(store_name="nope", name="x")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "file store nope is not found" in (err.value.details() or "")


@pytest.mark.only.with_args(lambda type_name: type_name == "file.s3")
async def test_a_missing_bucket_is_named_when_the_store_starts(type_name: str, components: Components) -> None:
    with pytest.raises(ComponentError, match=r"bucket no-such-bucket does not exist at s3 at 127\.0\.0\.1:\d+"):
        await components.create(bucket="no-such-bucket", connectAttempts="1")


@pytest.mark.only.with_args(lambda type_name: type_name == "file.s3")
async def test_chunks_that_straddle_parts_are_split_at_the_part_size(type_name: str, components: Components) -> None:
    """Parts of 5 MiB + 1 byte from chunks of 3 MiB + 7: most parts end inside a chunk."""
    store = await components.create(partSize=str(5 * MiB + 1))
    chunks = [bytes([n]) * (3 * MiB + 7) for n in range(7)]  # 21 MiB: four full parts and a short one

    async def stream() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    name = f"t-{uuid.uuid4().hex[:10]}/straddled.bin"
    await store.put(name, stream(), {})
    received = [chunk async for chunk in store.get(name, {})]
    assert b"".join(received) == b"".join(chunks)
    assert max(len(c) for c in received) <= MiB
    await store.delete(name, {})
