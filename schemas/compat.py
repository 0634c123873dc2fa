"""BACKWARD compatibility: can a reader on the new schema read every datum written with the old one?

Follows the Avro specification's schema resolution rules (records by field name or alias, defaults for new fields,
numeric promotion, unions branch by branch, enum symbols, fixed sizes).
"""

from __future__ import annotations

from typing import Any

_PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _norm(schema: Any) -> Any:
    if isinstance(schema, dict) and schema.get("type") in _PRIMITIVES and "logicalType" not in schema:
        return schema["type"]
    return schema


def _type_name(schema: Any) -> str:
    schema = _norm(schema)
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    return str(schema.get("type"))


def incompatibilities(reader: Any, writer: Any, path: str = "") -> list[str]:
    """Reasons why *reader* cannot read data written with *writer*; empty when compatible."""
    reader, writer = _norm(reader), _norm(writer)
    where = path or "<root>"
    if isinstance(writer, list):
        out: list[str] = []
        for branch in writer:
            out.extend(incompatibilities(reader, branch, f"{path}|{_type_name(branch)}"))
        return out
    if isinstance(reader, list):
        for branch in reader:
            if not incompatibilities(branch, writer, path):
                return []
        return [f"{where}: writer type {_type_name(writer)} matches no branch of the reader union"]
    rt, wt = _type_name(reader), _type_name(writer)
    if wt in _PROMOTIONS or wt in _PRIMITIVES:
        if rt == wt or rt in _PROMOTIONS.get(wt, set()):
            return []
        return [f"{where}: writer type {wt} cannot be read as {rt}"]
    if rt != wt:
        return [f"{where}: writer type {wt} cannot be read as {rt}"]
    if rt == "record":
        return _record(reader, writer, path)
    if rt == "enum":
        missing = set(writer["symbols"]) - set(reader["symbols"])
        if missing and "default" not in reader:
            return [f"{where}: enum symbols {sorted(missing)} removed without a reader default"]
        return []
    if rt == "array":
        return incompatibilities(reader["items"], writer["items"], f"{path}[]")
    if rt == "map":
        return incompatibilities(reader["values"], writer["values"], f"{path}{{}}")
    if rt == "fixed":
        return [] if reader["size"] == writer["size"] else [f"{where}: fixed size changed"]
    return []


def _record(reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
    out: list[str] = []
    writer_fields = {f["name"]: f for f in writer["fields"]}
    for field in reader["fields"]:
        names = [field["name"], *field.get("aliases", [])]
        match = next((writer_fields[n] for n in names if n in writer_fields), None)
        fpath = f"{path}.{field['name']}" if path else field["name"]
        if match is None:
            if "default" not in field:
                out.append(f"{fpath}: new field without a default; old data has no value for it")
            continue
        out.extend(incompatibilities(field["type"], match["type"], fpath))
    return out
