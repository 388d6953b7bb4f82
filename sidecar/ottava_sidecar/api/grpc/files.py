"""Layotto's file calls: GetFile streams chunks out, PutFile streams them in, and the three unary ones.

Only Layotto's service has them (Dapr has no file API), so this mixin builds
`runtime_pb2` messages directly. Each PutFile message may repeat the store and the name;
the first message's count, and a later one that names another file is refused.
"""

from collections.abc import AsyncIterator

from google.protobuf import empty_pb2

from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2 as pb
from ottava_sidecar.api import errors
from ottava_sidecar.api.apis import Apis
from ottava_sidecar.api.grpc.calls import Context, streaming, unary


class FileCalls:
    apis: Apis

    @streaming("file")
    async def GetFile(self, request: pb.GetFileRequest, context: Context) -> AsyncIterator[pb.GetFileResponse]:
        async for chunk in self.apis.files.get(request.store_name, request.name, dict(request.metadata)):
            yield pb.GetFileResponse(data=chunk)

    @unary("file")
    async def PutFile(self, request_iterator: AsyncIterator[pb.PutFileRequest], context: Context) -> empty_pb2.Empty:
        first = await anext(aiter(request_iterator), None)
        if first is None:
            raise errors.invalid_argument("PutFile got no message: the first one names the store and the file")
        await self.apis.files.put(first.store_name, first.name, dict(first.metadata), _chunks(first, request_iterator))
        return empty_pb2.Empty()

    @unary("file")
    async def ListFile(self, request: pb.ListFileRequest, context: Context) -> pb.ListFileResp:
        target = request.request
        page = await self.apis.files.list(
            target.store_name, target.name, request.page_size, request.marker, dict(target.metadata)
        )
        return pb.ListFileResp(
            files=[
                pb.FileInfo(file_name=f.name, size=f.size, last_modified=f.last_modified, metadata=f.metadata)
                for f in page.files
            ],
            marker=page.marker,
            is_truncated=page.truncated,
        )

    @unary("file")
    async def DelFile(self, request: pb.DelFileRequest, context: Context) -> empty_pb2.Empty:
        target = request.request
        await self.apis.files.delete(target.store_name, target.name, dict(target.metadata))
        return empty_pb2.Empty()

    @unary("file")
    async def GetFileMeta(self, request: pb.GetFileMetaRequest, context: Context) -> pb.GetFileMetaResponse:
        target = request.request
        meta = await self.apis.files.stat(target.store_name, target.name, dict(target.metadata))
        return pb.GetFileMetaResponse(
            size=meta.size,
            last_modified=meta.last_modified,
            response=pb.FileMeta(metadata={k: pb.FileMetaValue(value=v) for k, v in meta.metadata.items()}),
        )


async def _chunks(first: pb.PutFileRequest, rest: AsyncIterator[pb.PutFileRequest]) -> AsyncIterator[bytes]:
    yield first.data
    async for request in rest:
        if (request.store_name and request.store_name != first.store_name) or (
            request.name and request.name != first.name
        ):
            raise errors.invalid_argument(
                f"PutFile stream for {first.name} in file store {first.store_name} went on with "
                f"{request.name} in file store {request.store_name}: one stream uploads one file"
            )
        yield request.data
