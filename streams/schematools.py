"""Keep ``schemas/avro`` in step with the pydantic events, and publish versions after a compatibility check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.codec import PUBLISHED_DIR, SCHEMA_DIR, load_schema_file
from schemas.compat import incompatibilities
from twin.avro import avro_schema
from twin.events import ALL_TYPES


def expected_schemas() -> dict[str, dict[str, Any]]:
    return {t.__name__: avro_schema(t) for t in ALL_TYPES}


def dump(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def generate(schema_dir: Path = SCHEMA_DIR) -> list[Path]:
    """Write one ``.avsc`` per event type; returns the files that changed."""
    schema_dir.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, schema in expected_schemas().items():
        path = schema_dir / f"{name}.avsc"
        text = dump(schema)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


def latest_published(name: str, published_dir: Path = PUBLISHED_DIR) -> tuple[int, dict[str, Any]] | None:
    versions = sorted(
        ((int(p.stem[1:]), p) for p in (published_dir / name).glob("v*.avsc") if p.stem[1:].isdigit()),
        key=lambda t: t[0],
    )
    if not versions:
        return None
    n, path = versions[-1]
    return n, load_schema_file(path)


def check_backward(schema_dir: Path = SCHEMA_DIR, published_dir: Path = PUBLISHED_DIR) -> dict[str, list[str]]:
    """Per schema, why the current version cannot read data of its latest published version."""
    problems: dict[str, list[str]] = {}
    for path in sorted(schema_dir.glob("*.avsc")):
        current = load_schema_file(path)
        prev = latest_published(current["name"], published_dir)
        if prev is None:
            continue
        found = incompatibilities(current, prev[1])
        if found:
            problems[current["name"]] = [f"v{prev[0]} -> current: {p}" for p in found]
    return problems


def publish(schema_dir: Path = SCHEMA_DIR, published_dir: Path = PUBLISHED_DIR) -> list[Path]:
    """Store each changed schema as the next version, refusing any that breaks BACKWARD compatibility."""
    problems = check_backward(schema_dir, published_dir)
    if problems:
        lines = [f"{name}: {p}" for name, ps in problems.items() for p in ps]
        raise ValueError("not BACKWARD compatible, nothing published:\n" + "\n".join(lines))
    written = []
    for path in sorted(schema_dir.glob("*.avsc")):
        current = load_schema_file(path)
        prev = latest_published(current["name"], published_dir)
        if prev is not None and prev[1] == current:
            continue
        n = 1 if prev is None else prev[0] + 1
        target = published_dir / current["name"] / f"v{n}.avsc"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(dump(current), encoding="utf-8")
        written.append(target)
    return written
