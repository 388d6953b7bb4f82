"""Generate the metadata tables in docs/ from the component catalogue's settings models.

    python tools/gen_docs.py          rewrite the generated blocks of docs/**/*.md in place
    python tools/gen_docs.py --check  exit 1, naming each stale page, if a fresh rendering
                                      differs from what is committed (or a type has no table)

A generated block sits between two marker comments, and everything between them belongs
to this script:

    <!-- generated: metadata state.redis -->          the fields of one component type
    <!-- generated: shared-metadata redis -->         fields that several types share
    <!-- generated: catalogue -->                     every type, with a link to its fields
    <!-- generated: limits -->                        the limits' flags, annotations and defaults
    <!-- end generated -->

A type's table lists the fields it declares itself; fields it inherits from a shared
group (the Redis connection, start-up retries, TLS, …) are in that group's table, which
the type's table links to. The models are read through pydantic's public API
(`model_fields`, aliases, `model_json_schema`, `model_validate`), never by parsing source,
so the tables say what the sidecar accepts. Every catalogue type must have exactly one
table, and every group a type uses exactly one, or the check fails.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ottava_sidecar import limits
from ottava_sidecar.components import catalogue
from ottava_sidecar.components.base import ComponentMetadata
from pydantic import ValidationError
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parent.parent
PAGES = (ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")))

# Base models whose fields several component types share, by class name (found in the
# models' MROs, so this script does not depend on where those classes live): the name
# used in markers, and the words a link to the group's table uses.
SHARED_GROUPS: dict[str, tuple[str, str]] = {
    "RetryMetadata": ("retry", "start-up retries"),
    "TlsMetadata": ("tls", "TLS"),
    "RedisMetadata": ("redis", "Redis"),
    "PostgresMetadata": ("postgresql", "PostgreSQL"),
    "EtcdMetadata": ("etcd", "etcd"),
    "ZookeeperMetadata": ("zookeeper", "ZooKeeper"),
    "KubernetesMetadata": ("kubernetes", "Kubernetes"),
    "ConsumerMetadata": ("broker", "pub/sub brokers"),
    "BindingMetadata": ("binding", "every binding"),
}

MARKER = re.compile(r"^<!-- generated: (?P<kind>metadata|shared-metadata|catalogue|limits)(?: (?P<name>\S+))? -->$")
END_MARKER = "<!-- end generated -->"
HEADING = re.compile(r"^(#{1,6})\s+(?P<text>.+?)\s*#*\s*$")


class DocsError(Exception):
    """A marker that names nothing, a block without its end, a type without a table."""


@dataclass(frozen=True)
class Group:
    key: str
    label: str
    model: type[ComponentMetadata]


@dataclass(frozen=True)
class Block:
    page: Path
    kind: str
    name: str
    start: int  # index of the start marker's line
    end: int  # index of the end marker's line
    anchor: str  # the heading above the block, as a GitHub anchor


# --- reading the models --------------------------------------------------------------


def _groups_of(model: type[ComponentMetadata]) -> list[Group]:
    return [
        Group(*SHARED_GROUPS[cls.__name__], cls)
        for cls in model.__mro__[1:]
        if cls.__name__ in SHARED_GROUPS and isinstance(cls, type) and issubclass(cls, ComponentMetadata)
    ]


def _all_groups() -> dict[str, Group]:
    found: dict[str, Group] = {}
    for component_type in catalogue.all_types():
        model = component_type.metadata_model
        for group in _groups_of(model):
            found.setdefault(group.key, group)
    return found


def _inherited(model: type[ComponentMetadata]) -> set[str]:
    """Field names that `model` gets from shared groups (not counting itself)."""
    names: set[str] = set()
    for group in _groups_of(model):
        names |= set(group.model.model_fields)
    return names


def _top_groups(model: type[ComponentMetadata]) -> list[Group]:
    """The groups a table links to: not those that another of its groups already includes."""
    groups = _groups_of(model)
    included = {inner.key for group in groups for inner in _groups_of(group.model)}
    return [group for group in groups if group.key not in included]


def _accepts_duration(model: type[ComponentMetadata], alias: str) -> bool:
    try:
        model.model_validate({alias: "250ms"})
    except ValidationError as err:
        return not any(error["loc"] and error["loc"][0] == alias for error in err.errors())
    return True


def _value_kind(model: type[ComponentMetadata], alias: str, schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return " or ".join(f"`{value}`" for value in schema["enum"])
    kind = {"string": "text", "integer": "integer", "number": "number", "boolean": "boolean"}.get(
        str(schema.get("type")), str(schema.get("type", "text"))
    )
    if kind == "number" and _accepts_duration(model, alias):
        kind = "duration"
    if "exclusiveMinimum" in schema:
        kind += f" > {_number(schema['exclusiveMinimum'])}"
    elif "minimum" in schema:
        kind += f" ≥ {_number(schema['minimum'])}"
    if schema.get("minLength"):
        kind += ", not empty"
    return kind


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    milliseconds = seconds * 1000
    if milliseconds.is_integer():
        return f"{int(milliseconds)}ms"
    return f"{seconds}s"


def _default(field: FieldInfo, kind: str) -> str:
    if field.is_required():
        return "**required**"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int | float) and kind.startswith("duration"):
        return f"`{_duration(float(value))}`"
    if isinstance(value, int | float):
        return f"`{_number(value)}`"
    if value == "":
        return '`""`'
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _field_table(model: type[ComponentMetadata], skip: set[str]) -> list[str]:
    schema = model.model_json_schema(by_alias=True)["properties"]
    rows = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        alias = field.alias or name
        kind = _value_kind(model, alias, schema[alias])
        rows.append(
            f"| `{alias}` | {_cell(kind)} | {_cell(_default(field, kind))} | {_cell(field.description or '')} |"
        )
    if not rows:
        return []
    return ["| field | value | default | meaning |", "|---|---|---|---|", *rows]


# --- reading and writing pages ----------------------------------------------------------


def _anchor(text: str, seen: dict[str, int]) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
    count = seen.get(slug, 0)
    seen[slug] = count + 1
    return slug if count == 0 else f"{slug}-{count}"


def _blocks(page: Path, lines: list[str]) -> list[Block]:
    blocks: list[Block] = []
    seen: dict[str, int] = {}
    anchor = ""
    in_fence = False
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("```"):
            in_fence = not in_fence
        heading = None if in_fence else HEADING.match(line)
        if heading:
            anchor = _anchor(heading["text"], seen)
        match = None if in_fence else MARKER.match(line.strip())
        if match:
            end = next((j for j in range(index + 1, len(lines)) if lines[j].strip() == END_MARKER), None)
            if end is None:
                raise DocsError(f"{_rel(page)}:{index + 1}: {line.strip()} has no {END_MARKER}")
            blocks.append(Block(page, match["kind"], match["name"] or "", index, end, anchor))
            index = end
        index += 1
    return blocks


def _rel(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _relative(from_page: Path, to_page: Path) -> str:
    if from_page == to_page:
        return ""
    from_parts = from_page.parent.relative_to(ROOT).parts
    to_parts = to_page.relative_to(ROOT).parts
    common = 0
    while common < min(len(from_parts), len(to_parts) - 1) and from_parts[common] == to_parts[common]:
        common += 1
    return "/".join([".."] * (len(from_parts) - common) + list(to_parts[common:]))


def _href(from_page: Path, block: Block) -> str:
    return f"{_relative(from_page, block.page)}#{block.anchor}"


def _join_links(links: list[str]) -> str:
    return links[0] if len(links) == 1 else ", ".join(links[:-1]) + " and " + links[-1]


def _limits_table() -> list[str]:
    rows = ["| flag | pod annotation | default | what it bounds |", "|---|---|---|---|"]
    for setting in limits.SETTINGS:
        rows.append(
            f"| `{setting.flag} {setting.kind.upper()}` | `{setting.annotation}` | `{setting.default_text()}` "
            f"| {_cell(setting.help)} |"
        )
    return rows


def _render(block: Block, by_type: dict[str, Block], by_group: dict[str, Block], groups: dict[str, Group]) -> list[str]:
    if block.kind == "limits":
        return _limits_table()
    if block.kind == "catalogue":
        rows = ["| type | version | what it is | fields |", "|---|---|---|---|"]
        for component_type in sorted(catalogue.all_types(), key=lambda t: (t.name, t.version)):
            where = by_type[component_type.name]
            rows.append(
                f"| `{component_type.name}` | {component_type.version} | {_cell(component_type.description)} "
                f"| [{_rel(where.page).removeprefix('docs/')}]({_href(block.page, where)}) |"
            )
        return rows
    model = groups[block.name].model if block.kind == "shared-metadata" else catalogue.lookup(block.name).metadata_model
    table = _field_table(model, _inherited(model))
    links = [f"[{group.label}]({_href(block.page, by_group[group.key])})" for group in _top_groups(model)]
    lines = table or ["No metadata fields of its own." if links else "No metadata fields."]
    if links:
        lines += ["", f"Plus the shared fields for {_join_links(links)}."]
    return lines


def _index(pages: dict[Path, list[str]]) -> tuple[list[Block], dict[str, Block], dict[str, Block], dict[str, Group]]:
    blocks = [block for page, lines in pages.items() for block in _blocks(page, lines)]
    groups = _all_groups()
    known_types = {component_type.name for component_type in catalogue.all_types()}
    by_type: dict[str, Block] = {}
    by_group: dict[str, Block] = {}
    problems: list[str] = []
    for block in blocks:
        where = f"{_rel(block.page)}:{block.start + 1}"
        if block.kind == "metadata":
            if block.name not in known_types:
                problems.append(f"{where}: no component type {block.name!r} in the catalogue")
            elif block.name in by_type:
                problems.append(f"{where}: a second table for {block.name} (first: {_rel(by_type[block.name].page)})")
            else:
                by_type[block.name] = block
        elif block.kind == "shared-metadata":
            if block.name not in groups:
                problems.append(f"{where}: no shared group {block.name!r} (known: {', '.join(sorted(groups))})")
            elif block.name in by_group:
                problems.append(f"{where}: a second table for group {block.name}")
            else:
                by_group[block.name] = block
    for name in sorted(known_types - by_type.keys()):
        problems.append(f"no table for {name}: add `<!-- generated: metadata {name} -->` … `{END_MARKER}` to its page")
    for key in sorted(groups.keys() - by_group.keys()):
        problems.append(f"no table for the shared fields {key!r}: add `<!-- generated: shared-metadata {key} -->`")
    if problems:
        raise DocsError("\n".join(problems))
    return blocks, by_type, by_group, groups


def render_pages() -> dict[Path, tuple[str, str]]:
    """Every page with generated blocks: path → (committed text, fresh text)."""
    texts = {page: page.read_text(encoding="utf-8") for page in PAGES}
    pages = {page: text.split("\n") for page, text in texts.items()}
    blocks, by_type, by_group, groups = _index(pages)
    result: dict[Path, tuple[str, str]] = {}
    for page in sorted({block.page for block in blocks}):
        lines = list(pages[page])
        # Bottom up, so that earlier blocks' line numbers stay valid.
        for block in sorted((b for b in blocks if b.page == page), key=lambda b: b.start, reverse=True):
            body = ["", *_render(block, by_type, by_group, groups), ""]
            lines[block.start + 1 : block.end] = body
        result[page] = (texts[page], "\n".join(lines))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the metadata tables in docs/ from the settings models.")
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 naming each page whose generated blocks are stale",
    )
    args = parser.parse_args(argv)
    try:
        pages = render_pages()
    except DocsError as err:
        print(f"gen_docs: {err}")
        return 1
    stale = [page for page, (committed, fresh) in pages.items() if committed != fresh]
    if args.check:
        if stale:
            print("gen_docs: generated tables are stale; run `make docs`:")
            for page in stale:
                print(f"  changed: {_rel(page)}")
            return 1
        print(f"gen_docs: docs are up to date ({len(pages)} pages with generated tables)")
        return 0
    for page in stale:
        page.write_text(pages[page][1], encoding="utf-8", newline="\n")
    print(f"gen_docs: {len(pages)} pages with generated tables, {len(stale)} updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
