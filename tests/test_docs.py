"""Every code block the docs mark runnable is run, against a real standalone sidecar.

The convention (docs/README.md): a fenced block whose info string ends in `runnable`
(```` ```sh runnable ````, ```` ```python runnable ````) is an example a user can run on
a laptop with `make run`. It reaches the sidecar through `$DAPR_HTTP_PORT`,
`$DAPR_GRPC_PORT` (which Dapr SDKs read) and `$METRICS_PORT`, which this test sets to the
ports of a sidecar it started on free loopback ports.

Each page gets a fresh `ottava run --app-id docs` on the standalone defaults, and its
blocks run in page order, since a page's examples continue from one another (a test
selected alone first runs the blocks above it). A comment
`<!-- runnable-sidecar: VAR=value ottava run ARGS -->` replaces the sidecar for the
blocks after it, e.g. with a resources folder that an earlier block wrote.
`$TMPDIR` is a folder of the test's own, shared by the blocks and the sidecar.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import SidecarFactory, SidecarProcess

ROOT = Path(__file__).resolve().parents[1]
PAGES = (ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")))
FENCE = re.compile(r"^```(?P<info>.*)$")
SIDECAR_DIRECTIVE = re.compile(r"^<!-- runnable-sidecar: (?P<command>.+?) -->$")
LANGUAGES = {"sh": ["bash", "-e"], "bash": ["bash", "-e"], "python": [sys.executable]}
DEFAULT_SIDECAR = ("ottava", "run", "--app-id", "docs")
SNIPPET_TIMEOUT = 30.0
READY_TIMEOUT = 15.0
# Variables that would send a snippet somewhere other than the sidecar under test.
FOREIGN_ENV = re.compile(r"^(DAPR_.*|APP_.*|OTTAVA_.*|NAMESPACE|KUBECONFIG|(?i:https?_proxy|all_proxy|no_proxy))$")


@dataclass(frozen=True)
class Snippet:
    page: str
    line: int
    language: str
    code: str
    sidecar: tuple[str, ...]  # the `ottava run …` command line in effect, env assignments first
    segment: int  # which sidecar of the page (0: the default one)

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def find_snippets(page: Path) -> list[Snippet]:
    rel = page.relative_to(ROOT).as_posix()
    lines = page.read_text(encoding="utf-8").splitlines()
    snippets: list[Snippet] = []
    sidecar: tuple[str, ...] = DEFAULT_SIDECAR
    segment = 0
    index = 0
    while index < len(lines):
        directive = SIDECAR_DIRECTIVE.match(lines[index].strip())
        if directive:
            sidecar = tuple(shlex.split(directive["command"]))
            segment += 1
        fence = FENCE.match(lines[index])
        if fence:
            end = next((j for j in range(index + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            words = fence["info"].split()
            if len(words) == 2 and words[1] == "runnable":
                if words[0] not in LANGUAGES:
                    raise ValueError(f"{rel}:{index + 1}: runnable block of unknown language {words[0]!r}")
                code = "\n".join(lines[index + 1 : end]) + "\n"
                snippets.append(Snippet(rel, index + 1, words[0], code, sidecar, segment))
            index = end
        index += 1
    return snippets


SNIPPETS = [snippet for page in PAGES for snippet in find_snippets(page)]


@dataclass
class PageRun:
    """What has run of one page: its current sidecar and the blocks done so far."""

    factory: SidecarFactory
    tmp: Path
    done: set[int] = field(default_factory=set)
    segment: int = -1
    sidecar: SidecarProcess | None = None

    def env(self) -> dict[str, str]:
        assert self.sidecar is not None
        env = {name: value for name, value in os.environ.items() if not FOREIGN_ENV.match(name)}
        env.update(
            {
                "DAPR_HTTP_PORT": str(self.sidecar.http_port),
                "DAPR_GRPC_PORT": str(self.sidecar.grpc_port),
                "METRICS_PORT": str(self.sidecar.metrics_port),
                "TMPDIR": str(self.tmp),
                "NO_PROXY": "*",
            }
        )
        return env

    def use_sidecar(self, snippet: Snippet) -> None:
        if snippet.segment == self.segment and self.sidecar is not None:
            return
        if self.sidecar is not None:
            self.sidecar.stop()
        assignments = [word for word in snippet.sidecar if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", word)]
        command = [os.path.expandvars(word.replace("$TMPDIR", str(self.tmp))) for word in snippet.sidecar]
        command = command[len(assignments) :]
        assert command[:2] == ["ottava", "run"], f"{snippet.id}: runnable-sidecar must be `ottava run …`"
        env = dict(word.split("=", 1) for word in assignments)
        # A registry of app ids of its own, so that these sidecars are not in the user's.
        env.update({"TMPDIR": str(self.tmp), "OTTAVA_REGISTRY_DIR": str(self.tmp / "registry")})
        self.sidecar = self.factory.start(*command[2:], env=env)
        self.segment = snippet.segment
        _wait_until_ready(self.sidecar)

    def run(self, snippet: Snippet) -> subprocess.CompletedProcess[str]:
        self.use_sidecar(snippet)
        self.done.add(snippet.line)
        return subprocess.run(
            [*LANGUAGES[snippet.language], "-c", snippet.code],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=SNIPPET_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )


def _wait_until_ready(sidecar: SidecarProcess) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    last = ""
    with httpx.Client(base_url=sidecar.http_url, timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            response = client.get("/actuator/health/readiness")
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text}"
            time.sleep(0.05)  # polling interval, bounded by the deadline
    raise AssertionError(f"the sidecar was not ready within {READY_TIMEOUT}s: {last}\n{sidecar.log()}")


@dataclass
class DocsRuns:
    factory: SidecarFactory
    tmp: pytest.TempPathFactory
    pages: dict[str, PageRun] = field(default_factory=dict)

    def page(self, name: str) -> PageRun:
        if name not in self.pages:
            self.pages[name] = PageRun(self.factory, self.tmp.mktemp("docs-tmp"))
        return self.pages[name]


@pytest.fixture(scope="module")
def docs_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocsRuns]:
    runs = DocsRuns(SidecarFactory(tmp_path_factory.mktemp("docs-sidecars")), tmp_path_factory)
    yield runs
    for run in runs.pages.values():
        if run.sidecar is not None:
            run.sidecar.stop()
    runs.factory.stop_all()


def _report(snippet: Snippet, result: subprocess.CompletedProcess[str], sidecar: SidecarProcess | None) -> str:
    log = sidecar.log()[-3000:] if sidecar is not None else ""
    return (
        f"{snippet.id} ({snippet.language}) exited with {result.returncode}\n"
        f"--- block ---\n{snippet.code}--- stdout ---\n{result.stdout}--- stderr ---\n{result.stderr}"
        f"--- sidecar log (tail) ---\n{log}"
    )


def test_there_are_runnable_examples() -> None:
    pages = {snippet.page for snippet in SNIPPETS}
    assert len(SNIPPETS) >= 15 and len(pages) >= 8, sorted(pages)


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[snippet.id for snippet in SNIPPETS])
def test_runnable_snippet(snippet: Snippet, docs_runs: DocsRuns) -> None:
    run = docs_runs.page(snippet.page)
    # The blocks above this one set up what it continues from.
    for earlier in (s for s in SNIPPETS if s.page == snippet.page and s.line < snippet.line):
        if earlier.line not in run.done:
            result = run.run(earlier)
            assert result.returncode == 0, "an earlier block of the page failed:\n" + _report(
                earlier, result, run.sidecar
            )
    result = run.run(snippet)
    assert result.returncode == 0, _report(snippet, result, run.sidecar)
