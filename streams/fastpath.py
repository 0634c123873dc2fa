"""The hot path's validation: per event type, a check compiled from the pydantic model's own field rules.

``model_validate`` costs about 21 us per datum, more than the whole budget of a reading at 50k readings/s. The check
here is derived from the model (field types, ``ge/gt/le/lt``, string lengths, ``allow_inf_nan``), so the pydantic
models stay the single source of truth, and it is *sound*: it only says yes when ``model_validate`` would accept the
record with the same values. Whenever it is not sure (a rule it does not know, a time in an unusual format, an entity it
has not seen), it says no and the caller asks ``model_validate``, which gives the verdict and the reason. Property tests
(tests/streams/test_fastpath.py) prove both halves against ``model_validate``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from twin.events import EARLIEST, LATEST, Event, ParkingOccupancyReported
from twin.ids import EntityId, InvalidEntityId

# RFC 3339 with an explicit offset: what both pydantic and datetime.fromisoformat read to the same instant
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})\Z")
_ENVELOPE_TIME = "occurred_at"

Check = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class FieldRules:
    """What a pydantic field demands, in the terms both compiled checks use (Python source and polars expressions)."""

    ann: type
    optional: bool
    bounds: tuple[tuple[str, Any], ...]  # (operator, value): ">=", ">", "<=", "<"
    min_len: int | None
    max_len: int | None
    finite: bool


def field_rules(info: FieldInfo) -> FieldRules | None:
    """The field's rules, or None for a rule or a type the compiled checks do not know (then pydantic decides)."""
    ann = info.annotation
    bounds: list[tuple[str, Any]] = []
    min_len = max_len = None
    finite = False
    metadata = list(info.metadata)
    optional = False
    args = getattr(ann, "__args__", ())
    if args and type(None) in args and len(args) == 2:  # X | None
        optional = True
        ann = next(a for a in args if a is not type(None))
        for m in getattr(ann, "__metadata__", ()):
            metadata.extend(m.metadata if isinstance(m, FieldInfo) else [m])
        ann = getattr(ann, "__origin__", ann)
    for m in metadata:
        if isinstance(m, at.Ge):
            bounds.append((">=", m.ge))
        elif isinstance(m, at.Gt):
            bounds.append((">", m.gt))
        elif isinstance(m, at.Le):
            bounds.append(("<=", m.le))
        elif isinstance(m, at.Lt):
            bounds.append(("<", m.lt))
        elif isinstance(m, at.MinLen):
            min_len = m.min_length
        elif isinstance(m, at.MaxLen):
            max_len = m.max_length
        elif getattr(m, "allow_inf_nan", None) is False:
            finite = True
        else:
            return None
    if ann is float and not bounds and not finite:
        return None  # a float without rules: pydantic also takes strings etc.; not worth a fast path
    if ann not in (float, int, str):
        return None
    return FieldRules(ann, optional, tuple(bounds), min_len, max_len, finite)  # type: ignore[arg-type]


def _field_expr(name: str, info: FieldInfo, n: int) -> str | None:
    """A Python expression over ``rec`` that is true when the field is valid for sure; None for an unknown rule."""
    r = field_rules(info)
    if r is None:
        return None
    v = f"v{n}"
    bounds = [f"{v} {op} {value!r}" for op, value in r.bounds]
    if r.ann is float:
        tests = [f"(type({v}) is float or type({v}) is int)", *bounds]
        if r.finite:
            tests.append(f"isfinite({v})")
    elif r.ann is int:
        tests = [f"type({v}) is int", *bounds]
    else:
        tests = [f"type({v}) is str"]
        if r.min_len is not None:
            tests.append(f"len({v}) >= {r.min_len}")
        if r.max_len is not None:
            tests.append(f"len({v}) <= {r.max_len}")
    body = " and ".join(tests)
    if r.optional:
        return f"(({v} := rec[{name!r}]) is None or ({body}))"
    return f"(({v} := rec[{name!r}]) is not None and {body})"


class FastCheck:
    """The compiled check of one event model; ``None`` from :func:`compile_check` when a field cannot be compiled."""

    def __init__(self, model: type[Event], check: Check) -> None:
        self.model = model
        self.fields = frozenset(model.model_fields)
        self.check = check
        self.kind = model.entity_kind
        self.parking = issubclass(model, ParkingOccupancyReported)
        self._entities: dict[str, str] = {}  # entity id -> its region, for ids known to parse with the right kind

    def entity_ok(self, entity_id: Any, region: Any) -> bool:
        known = self._entities.get(entity_id)
        if known is None:
            if type(entity_id) is not str:
                return False
            try:
                eid = EntityId.parse(entity_id)
            except InvalidEntityId:
                return False
            if self.kind is not None and eid.kind is not self.kind:
                return False
            known = self._entities[entity_id] = eid.region
        return known == region

    def __call__(self, rec: dict[str, Any]) -> datetime | None:
        """The record's parsed ``occurred_at`` when the record is valid for sure, else None (ask pydantic)."""
        if rec.keys() != self.fields:
            return None
        if not self.check(rec):
            return None
        if not self.entity_ok(rec["entity_id"], rec["region"]):
            return None
        if self.parking and rec["occupied"] > rec["capacity"]:
            return None
        raw = rec[_ENVELOPE_TIME]
        if type(raw) is not str or _RFC3339.match(raw) is None:
            return None
        try:
            t = datetime.fromisoformat(raw)
        except ValueError:
            return None
        return t if t.tzinfo is not None and EARLIEST <= t < LATEST else None


# model_post_init rules the check above replays by hand; a model with any other post-init rule is not compiled
_KNOWN_POST_INIT = {"Event", "ParkingOccupancyReported"}


def compile_check(model: type[BaseModel]) -> FastCheck | None:
    if not issubclass(model, Event):
        return None
    for klass in model.__mro__:
        if "model_post_init" in vars(klass) and klass.__name__ not in _KNOWN_POST_INIT and klass is not BaseModel:
            return None
    exprs: list[str] = []
    for n, (name, info) in enumerate(model.model_fields.items()):
        if name == _ENVELOPE_TIME or name == "entity_id":
            continue  # checked by FastCheck itself
        e = _field_expr(name, info, n)
        if e is None:
            return None
        exprs.append(e)
    src = "def check(rec):\n    return " + " and ".join(exprs or ["True"]) + "\n"
    scope: dict[str, Any] = {"isfinite": math.isfinite}
    exec(compile(src, f"<fast check {model.__name__}>", "exec"), scope)  # noqa: S102 - code built from the model above
    return FastCheck(model, scope["check"])


def light_to_model(model: type[Event], rec: dict[str, Any], t: datetime) -> Event:
    """A model instance from a record the fast check accepted, without validating again."""
    fields = dict(rec)
    fields["occurred_at"] = t
    fields["entity_id"] = str.__new__(EntityId, rec["entity_id"])
    # what model_construct does, minus its per-field default handling (every field is present): ~1 us, not ~5 us
    event = model.__new__(model)
    object.__setattr__(event, "__dict__", fields)
    object.__setattr__(event, "__pydantic_fields_set__", set(fields))
    object.__setattr__(event, "__pydantic_extra__", None)
    object.__setattr__(event, "__pydantic_private__", None)
    return event
