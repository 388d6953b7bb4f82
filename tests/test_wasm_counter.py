"""The acceptance of WebAssembly functions: the Go counter of examples/wasm, as the docs run it.

The test builds the example with `make wasm-examples` (the Go toolchain; Go's build cache
makes it quick after the first time), starts `ottava run --resources-path
examples/wasm/resources` with the example's subscriber app, and calls the function as
users do.
"""

import concurrent.futures
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import SidecarFactory, SidecarProcess
from tests.messaging import ROOT, events, free_port, wait_for, wait_ready

RESOURCES = ROOT / "examples" / "wasm" / "resources"
LOOPER = f"""\
apiVersion: ottava.io/v1alpha1
kind: Component
metadata: {{name: looper}}
spec:
  type: function.wasm
  version: v1
  metadata:
  - {{name: path, value: "{ROOT}/tests/wasm/loop.wat"}}
  - {{name: timeLimit, value: 1s}}
"""


@pytest.fixture(scope="module")
def counter_module() -> Path:
    subprocess.run(["make", "-s", "wasm-examples"], cwd=ROOT, check=True, timeout=600)
    return ROOT / "examples" / "wasm" / "counter" / "counter.wasm"


@pytest.fixture
def web(counter_module: Path, sidecars: SidecarFactory, tmp_path: Path) -> Iterator[tuple[SidecarProcess, Path]]:
    events_file = tmp_path / "events.jsonl"
    events_file.touch()
    # The example's manifests, with their paths (relative to the repository's root) made absolute,
    # and a function that loops forever beside the counter.
    resources = {
        p.name: p.read_text().replace("value: examples/", f"value: {ROOT}/examples/") for p in RESOURCES.glob("*.yaml")
    }
    resources["looper.yaml"] = LOOPER
    sidecar = sidecars.start(
        "--app-id",
        "web",
        "--app-port",
        str(free_port()),
        "--",
        str(ROOT / ".venv" / "bin" / "python"),
        str(ROOT / "examples" / "wasm" / "subscriber.py"),
        env={"EVENTS_FILE": str(events_file), "OTTAVA_REGISTRY_DIR": str(tmp_path / "registry")},
        resources=resources,
    )
    wait_ready(sidecar)
    yield sidecar, events_file
    sidecar.stop()


def visit(sidecar: SidecarProcess) -> httpx.Response:
    return httpx.post(f"{sidecar.http_url}/v1.0/invoke/counter/method/visit", timeout=30)


def test_three_visits_count_1_2_3_and_the_app_receives_three_events(web: tuple[SidecarProcess, Path]) -> None:
    sidecar, events_file = web
    answers = [visit(sidecar) for _ in range(3)]
    assert [(a.status_code, a.text) for a in answers] == [(200, "1"), (200, "2"), (200, "3")]
    received = wait_for(lambda: events(events_file) if len(events(events_file)) >= 3 else None, "three events")
    assert sorted(e["data"]["visits"] for e in received) == [1, 2, 3]
    assert all(e["data"]["method"] == "visit" for e in received)
    state = httpx.get(f"{sidecar.http_url}/v1.0/state/statestore/visits", timeout=10)
    assert state.text == "3"


def running(sidecar: SidecarProcess, function: str) -> float:
    text = httpx.get(f"{sidecar.metrics_url}/metrics", timeout=10).text
    prefix = f'ottava_function_calls_running{{function="{function}"}} '
    return next((float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix)), 0.0)


def test_a_looping_function_is_stopped_while_concurrent_counter_calls_succeed(web: tuple[SidecarProcess, Path]) -> None:
    sidecar, _ = web
    url = f"{sidecar.http_url}/v1.0/invoke/looper/method/spin"
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        loops = [pool.submit(httpx.post, url, timeout=30) for _ in range(3)]
        wait_for(lambda: running(sidecar, "looper") == 3, "three looping calls running")
        counts = [visit(sidecar) for _ in range(10)]
        assert [(c.status_code, c.text) for c in counts] == [(200, str(n)) for n in range(1, 11)]
        for loop in loops:
            answer = loop.result()
            assert answer.status_code == 504
            assert answer.json()["message"] == "function looper exceeded its 1 s time limit and was stopped"
