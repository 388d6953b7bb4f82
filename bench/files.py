"""Files through the sidecar: put and get 1 GiB on `file.local`, watching the sidecar's memory.

    make bench                                  # this among the others
    .venv/bin/python -m bench.files             # alone: under a minute
    .venv/bin/python -m bench.files --mib 256   # a smaller file
    .venv/bin/python -m bench.files --backend s3   # file.s3 on the tests' S3 server (moto)
    .venv/bin/python -m bench.files --backend s3 --part-size 33554432   # what a larger part costs

Starts `ottava run` with one Component, `file.local` on a scratch folder (or, with
`--backend s3`, `file.s3` on the tests' S3 server, moto, started here), and drives it
with the stubs generated from proto/ (Layotto's `Runtime`), as an app would: PutFile of
`--mib` MiB in 1 MiB messages, then GetFile of it, checking the SHA-256 of what came
back against what was sent. The file never sits whole in the sidecar: its resident
memory (RSS, from /proc/<pid>/status) is read every 20 ms while the bytes flow, and the
kernel's own peak (VmHWM, reset through /proc/<pid>/clear_refs before each transfer)
catches what falls between two readings. "Idle" is the RSS after a 1 MiB put and get
(so the code of the file path is loaded), with nothing in flight. The acceptance: the
peak during each transfer stays under idle + 50 MB; the run exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2 as pb
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2_grpc

from tests.servers import s3_server as s3_setup
from tests.servers.process import ServerProcess

MiB = 1024 * 1024
ALLOWANCE_MB = 50.0
READY = re.compile(r"^ottava sidecar UP: .* grpc=\S+:(?P<grpc>\d+) ")
OTTAVA = str(Path(sys.executable).with_name("ottava"))
STORE = "files"
COMPONENT = """\
apiVersion: ottava.io/v1alpha1
kind: Component
metadata: {{name: {store}}}
spec:
  type: {type}
  metadata:
{metadata}
"""
S3_BUCKET = "ottava-bench"


def component(backend: str, folder: Path, s3: ServerProcess | None, part_size: int) -> str:
    if s3 is None:
        metadata = {"rootPath": str(folder / "root")}
    else:
        metadata = {
            "endpoint": s3_setup.endpoint(s3),
            "bucket": S3_BUCKET,
            "accessKeyID": s3_setup.ACCESS_KEY_ID,
            "secretAccessKey": s3_setup.SECRET_ACCESS_KEY,
            "forcePathStyle": "true",
            "partSize": str(part_size),
        }
    lines = "\n".join(f"  - {{name: {k}, value: {json.dumps(v)}}}" for k, v in metadata.items())
    return COMPONENT.format(store=STORE, type=f"file.{backend}", metadata=lines)


@dataclass
class Sidecar:
    process: subprocess.Popen[str]
    grpc_port: int

    def memory_mb(self, field: str = "VmRSS") -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        found = re.search(rf"^{field}:\s+(\d+) kB", status, re.M)
        assert found is not None, f"/proc/{self.process.pid}/status has no {field}"
        return int(found.group(1)) / 1024

    def reset_peak(self) -> bool:
        """Reset VmHWM to the current RSS (Linux 4.0+); False where the kernel does not let us."""
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False


@contextlib.contextmanager
def sidecar(folder: Path, manifest: str) -> Iterator[Sidecar]:
    resources = folder / "resources"
    resources.mkdir()
    (resources / "files.yaml").write_text(manifest)
    command = [OTTAVA, "run", "--app-id", "bench-files", "--resources-path", str(resources)]
    command += ["--grpc-port", "0", "--http-port", "0", "--metrics-port", "0", "--internal-grpc-port", "0"]
    command += ["--log-level", "error"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        for line in process.stdout:
            if match := READY.match(line):
                yield Sidecar(process, int(match["grpc"]))
                return
            if time.monotonic() > deadline:
                break
        raise SystemExit("bench.files: the sidecar did not become ready")
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def blocks(mib: int) -> Iterator[bytes]:
    """`mib` distinct-enough 1 MiB chunks without holding them: 16 random blocks, each salted by its index."""
    base = [os.urandom(MiB) for _ in range(16)]
    for i in range(mib):
        block = base[i % 16]
        yield i.to_bytes(8, "big") + block[8:]


@dataclass
class Watch:
    """RSS readings while a transfer runs."""

    peak_mb: float = 0.0
    readings: int = 0


async def watch(target: Sidecar, into: Watch) -> None:
    while True:
        into.peak_mb = max(into.peak_mb, target.memory_mb())
        into.readings += 1
        await asyncio.sleep(0.02)


async def watched(target: Sidecar, phase: Awaitable[None]) -> tuple[float, float]:
    """Run `phase`: (its seconds, the sidecar's peak RSS in MB meanwhile, the kernel's VmHWM when it lets us)."""
    readings = Watch()
    kernel_peak = target.reset_peak()
    sampler = asyncio.create_task(watch(target, readings))
    started = time.perf_counter()
    try:
        await phase
    finally:
        seconds = time.perf_counter() - started
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    return seconds, max(readings.peak_mb, target.memory_mb("VmHWM") if kernel_peak else 0.0)


@dataclass
class Transfer:
    put_seconds: float
    put_peak_mb: float
    get_seconds: float
    get_peak_mb: float


async def transfer(target: Sidecar, runtime: runtime_pb2_grpc.RuntimeAsyncStub, name: str, mib: int) -> Transfer:
    """Put then get `name`, checking that the bytes came back."""
    sent = hashlib.sha256()
    received = hashlib.sha256()
    size = 0

    async def requests() -> AsyncIterator[pb.PutFileRequest]:
        for chunk in blocks(mib):
            sent.update(chunk)
            yield pb.PutFileRequest(store_name=STORE, name=name, data=chunk)

    async def put() -> None:
        await runtime.PutFile(requests())

    async def get() -> None:
        nonlocal size
        async for response in runtime.GetFile(pb.GetFileRequest(store_name=STORE, name=name)):
            received.update(response.data)
            size += len(response.data)

    put_seconds, put_peak = await watched(target, put())
    get_seconds, get_peak = await watched(target, get())
    if size != mib * MiB or received.digest() != sent.digest():
        raise SystemExit(f"bench.files: {name} came back different ({size} bytes, sha256 {received.hexdigest()})")
    return Transfer(put_seconds, put_peak, get_seconds, get_peak)


async def run(target: Sidecar, mib: int, backend: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{target.grpc_port}") as channel:
        runtime = runtime_pb2_grpc.RuntimeStub(channel)
        started_mb = target.memory_mb()
        await transfer(target, runtime, "warm-up.bin", 1)
        await asyncio.sleep(1.0)  # let the warm-up's buffers go back
        idle_mb = target.memory_mb()
        big = await transfer(target, runtime, "big.bin", mib)
        await runtime.DelFile(pb.DelFileRequest(request=pb.FileRequest(store_name=STORE, name="big.bin")))
        after_mb = target.memory_mb()
    growth = max(big.put_peak_mb, big.get_peak_mb) - idle_mb
    verdict = growth < ALLOWANCE_MB
    print(f"bench.files: file.{backend}, {mib} MiB put then got in 1 MiB messages (sha256 checked)")
    print(f"  sidecar RSS at start {started_mb:.1f} MB; idle (after a 1 MiB warm-up) {idle_mb:.1f} MB")
    for phase, seconds, peak in (
        ("PutFile", big.put_seconds, big.put_peak_mb),
        ("GetFile", big.get_seconds, big.get_peak_mb),
    ):
        print(
            f"  {phase}: {mib / seconds:6.1f} MiB/s ({seconds:.1f} s), "
            f"peak RSS {peak:.1f} MB (+{peak - idle_mb:.1f} MB over idle)"
        )
    print(f"  after deleting it: {after_mb:.1f} MB")
    print(
        f"  {'PASS' if verdict else 'FAIL'}: peak growth {growth:.1f} MB {'<' if verdict else '>='} {ALLOWANCE_MB:.0f} MB"
    )
    return 0 if verdict else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024, help="size of the file in MiB (default 1024: 1 GiB)")
    parser.add_argument(
        "--backend",
        choices=("local", "s3"),
        default="local",
        help="file.local (default) or file.s3 on the tests' S3 server (moto, which holds the file in its memory)",
    )
    parser.add_argument(
        "--part-size", type=int, default=8 * MiB, help="file.s3's partSize in bytes (default 8 MiB, its default)"
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="ottava-bench-files-"))
    s3 = None
    try:
        if args.backend == "s3":
            s3 = s3_setup.start()
            s3_setup.create_bucket(s3, S3_BUCKET)
        with sidecar(folder, component(args.backend, folder, s3, args.part_size)) as target:
            return asyncio.run(run(target, args.mib, args.backend))
    finally:
        if s3 is not None:
            s3.stop()
            shutil.rmtree(s3.data_dir, ignore_errors=True)
            s3.log_path.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
