"""Generate the CRD manifests under crds/ from the resource models.

    python tools/gen_crds.py          regenerate crds/ in place
    python tools/gen_crds.py --check  exit 1, listing stale, missing or extra files, if the
                                      committed crds/ differ from a fresh rendering

The rendering itself lives in ``ottava_sidecar.resources.crd`` (so tests and the Helm
chart use the same code), plus the CRD of kopf's peering from ``ottava_operator.peering``
(the operator replicas elect their leader with it); this script only compares and
writes. Everything under crds/ is owned by this script: files it does not produce are
removed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ottava_operator import peering
from ottava_sidecar.resources import crd

ROOT = Path(__file__).resolve().parent.parent
# The same files go to crds/ (for kubectl users) and into the Helm chart, which installs them.
CRDS_DIRS = (ROOT / "crds", ROOT / "charts" / "ottava" / "crds")


def _committed(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.iterdir()) if p.is_file()}


def _diff(fresh: dict[str, str], committed: dict[str, str]) -> list[str]:
    stale: list[str] = []
    for name in sorted(fresh.keys() | committed.keys()):
        if name not in committed:
            stale.append(f"missing: {name}")
        elif name not in fresh:
            stale.append(f"extra:   {name}")
        elif fresh[name] != committed[name]:
            stale.append(f"changed: {name}")
    return stale


def _sync(folder: Path, fresh: dict[str, str], committed: dict[str, str]) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for name, text in fresh.items():
        if committed.get(name) != text:
            (folder / name).write_text(text, encoding="utf-8", newline="\n")
            written += 1
    for name in committed.keys() - fresh.keys():
        (folder / name).unlink()
        written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate crds/ from the resource models.")
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 listing files that differ from a fresh rendering",
    )
    args = parser.parse_args(argv)

    fresh = {**crd.render_crds(), **peering.render_crds()}
    status = 0
    for folder in CRDS_DIRS:
        committed = _committed(folder)
        crds_rel = folder.relative_to(ROOT).as_posix()
        if args.check:
            stale = _diff(fresh, committed)
            if stale:
                print(f"gen_crds: {crds_rel} is stale; run `make crds`:")
                for line in stale:
                    print(f"  {line}")
                status = 1
            else:
                print(f"gen_crds: {crds_rel} is up to date ({len(fresh)} files)")
            continue
        written = _sync(folder, fresh, committed)
        print(f"gen_crds: {crds_rel}: {len(fresh)} files, {written} updated")
    return status


if __name__ == "__main__":
    sys.exit(main())
