"""The import layers of pyproject.toml hold, and break as soon as a module imports upwards.

`make lint` runs `lint-imports` on the installed packages. Here it runs on a copy of them,
put first on PYTHONPATH, so a test can add one bad import and see the contract fail and
name the import, as a contributor would see it.
"""

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def package_dirs() -> dict[str, Path]:
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    folders: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    return {name: ROOT / folder for name, folder in folders.items()}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of every package of the distribution, to add imports to."""
    for name, folder in package_dirs().items():
        shutil.copytree(folder, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), str(PYPROJECT), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def add_line(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"\n{line}\n")


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


def test_a_component_importing_the_runtime_breaks_the_sidecar_layers(tree: Path) -> None:
    add_line(tree / "ottava_sidecar/components/base.py", "from ottava_sidecar.runtime import sidecar as _upward")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "Sidecar: entry point" in result.stdout and "BROKEN" in result.stdout
    assert "ottava_sidecar.components.base -> ottava_sidecar.runtime.sidecar" in result.stdout


def test_the_sidecar_importing_the_operator_breaks_the_packages_contract(tree: Path) -> None:
    add_line(tree / "ottava_sidecar/contract.py", "import ottava_operator.injection as _upward")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "Packages: the command above the operator, the operator above the sidecar BROKEN" in " ".join(
        result.stdout.split()
    )
    assert "ottava_sidecar.contract -> ottava_operator.injection" in result.stdout


def test_two_building_blocks_importing_each_other_break_the_components_layers(tree: Path) -> None:
    add_line(
        tree / "ottava_sidecar/components/lock/redis.py", "from ottava_sidecar.components.state import redis as _side"
    )
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "ottava_sidecar.components.lock.redis -> ottava_sidecar.components.state.redis" in result.stdout


def test_a_new_module_must_choose_its_layer(tree: Path) -> None:
    (tree / "ottava_sidecar/helpers.py").write_text('"""Where code goes to be forgotten."""\n', encoding="utf-8")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "ottava_sidecar.helpers" in result.stdout


def drawn_in_order(layers: list[str], lines: list[str]) -> bool:
    """Whether `layers` appear among `lines` in this order (other lines may sit between)."""
    rest = iter(lines)
    return all(layer in rest for layer in layers)


def test_architecture_md_draws_the_contracts_layers() -> None:
    """Every layers contract is drawn in one block of ARCHITECTURE.md, a line per layer, in order."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    blocks = [
        [re.split(r"\s{2,}", line.strip())[0] for line in block.splitlines() if line.strip()]
        for block in text.split("```")[1::2]
    ]
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    for contract in config["tool"]["importlinter"]["contracts"]:
        if "containers" not in contract:
            continue  # the packages contract is drawn as a picture of its own
        layers: list[str] = contract["layers"]
        assert any(drawn_in_order(layers, block) for block in blocks), (
            f"{contract['id']}: ARCHITECTURE.md has no block drawing {layers} in this order"
        )


def test_one_name_per_public_class() -> None:
    """Two public classes with one name (a manifest model and a running instance, say) confuse every reader."""
    homes: dict[str, list[str]] = {}
    for folder in package_dirs().values():
        for path in sorted(folder.rglob("*.py")):
            if "_gen" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                    homes.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in homes.items() if len(paths) > 1} == {}
