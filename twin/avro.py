"""Derive Avro schemas from the pydantic event models (pure; the ``.avsc`` files are generated from this)."""

from __future__ import annotations

import types
import typing
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

NAMESPACE = "de.kielregion.plietsch"


class UnsupportedFieldType(TypeError):
    pass


def _avro_type(annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _avro_type(args[0], where)
    if origin in (typing.Union, types.UnionType):
        non_null = [a for a in args if a is not type(None)]
        if len(non_null) == 1 and len(args) == 2:
            return ["null", _avro_type(non_null[0], where)]
        raise UnsupportedFieldType(f"{where}: only Optional[X] unions are supported, got {annotation!r}")
    if origin is typing.Literal:
        return "string"
    if origin is list:
        return {"type": "array", "items": _avro_type(args[0], where)}
    if origin is dict:
        return {"type": "map", "values": _avro_type(args[1], where)}
    if isinstance(annotation, type):
        if issubclass(annotation, bool):
            return "boolean"
        if issubclass(annotation, int):
            return "long"
        if issubclass(annotation, float):
            return "double"
        if issubclass(annotation, bytes):
            return "bytes"
        if issubclass(annotation, str | datetime):
            return "string"
    if annotation is typing.Any:
        raise UnsupportedFieldType(f"{where}: Any has no Avro type")
    # pydantic's AwareDatetime and similar annotated aliases
    if getattr(annotation, "__name__", "") == "AwareDatetime" or annotation.__class__.__name__ == "AwareDatetime":
        return "string"
    raise UnsupportedFieldType(f"{where}: no Avro mapping for {annotation!r}")


def _field(name: str, info: FieldInfo, model: type[BaseModel]) -> dict[str, Any]:
    avro_t = _avro_type(info.annotation, f"{model.__name__}.{name}")
    out: dict[str, Any] = {"name": name, "type": avro_t}
    if info.description:
        out["doc"] = info.description
    if isinstance(avro_t, list) and avro_t[0] == "null":
        out["default"] = None
    elif not info.is_required() and info.default_factory is None and isinstance(info.default, int | float | str | bool):
        out["default"] = info.default
    return out


def avro_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The Avro record schema for *model*; the record name is the class (event) name."""
    doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    schema: dict[str, Any] = {"type": "record", "name": model.__name__, "namespace": NAMESPACE}
    if doc:
        schema["doc"] = doc
    # datetime fields carry a hint so readers know the string is RFC 3339
    fields = []
    for name, info in model.model_fields.items():
        f = _field(name, info, model)
        ann = info.annotation
        if getattr(ann, "__name__", "") == "AwareDatetime" or ann is datetime:
            f["plietsch.format"] = "rfc3339"
        fields.append(f)
    schema["fields"] = fields
    return schema
