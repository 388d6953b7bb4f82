"""The ready line's promise: every port it names takes the first call made right after it.

The sidecar prints the line once its ports are bound and its components loaded, and
serves the APIs just after (docs/running.md, "The ready line"). A client that calls at
once must then be answered, later perhaps, but never refused: these calls are made the
moment the line is read, all at once, with no polling and no retry.
"""

import re
import socket
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
from dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2
from ottava_sidecar._gen.spec.proto.runtime.v1 import runtime_pb2, runtime_pb2_grpc

from tests.conftest import SidecarFactory


def _get_state(address: str) -> bytes:
    with grpc.insecure_channel(address) as channel:  # not wait_for_ready: a refused connection fails the call
        answer = dapr_pb2_grpc.DaprStub(channel).GetState(
            state_pb2.GetStateRequest(store_name="statestore", key="never-saved"), timeout=30
        )
    return bytes(answer.data)


def _layotto_hello(address: str) -> str:
    with grpc.insecure_channel(address) as channel:
        try:
            runtime_pb2_grpc.RuntimeStub(channel).SayHello(
                runtime_pb2.SayHelloRequest(service_name="ready"), timeout=30
            )
        except grpc.RpcError as err:
            return err.code().name  # served, if not implemented: an answer all the same
        return "OK"


def test_every_port_takes_the_first_call_made_right_after_the_ready_line(sidecars: SidecarFactory) -> None:
    sidecar = sidecars.start("--app-id", "ready")
    internal = re.search(r"internal=\S+:(\d+)", sidecar.ready_line)
    assert internal is not None, sidecar.ready_line
    assert sidecar.status == "UP"

    with ThreadPoolExecutor(max_workers=5) as pool:
        health = pool.submit(httpx.get, f"{sidecar.http_url}/v1.0/healthz", timeout=30)
        metrics = pool.submit(httpx.get, f"{sidecar.metrics_url}/metrics", timeout=30)
        state = pool.submit(_get_state, sidecar.grpc_address)
        layotto = pool.submit(_layotto_hello, sidecar.grpc_address)
        peer = pool.submit(socket.create_connection, ("127.0.0.1", int(internal[1])), 30)

        assert health.result().status_code == 204
        assert metrics.result().status_code == 200
        assert "ottava_" in metrics.result().text
        assert state.result() == b""
        assert layotto.result() in {"OK", "UNIMPLEMENTED"}
        peer.result().close()  # the internal port accepted the connection (it speaks mTLS)
