"""The hot path's columnar decoder: a batch record's datums decoded, checked and timed as columns, not one by one.

A batch record (``schemas.codec`` framing) whose datums all carry the same writer schema is, after the 10-byte
single-object headers, a run of Avro record bodies: exactly the body of one Avro object container block. Wrapped in a
container header of that schema it is decoded by polars' Avro reader (Rust) into a DataFrame, about 5-10x faster than
fastavro datum by datum. Nothing is taken on trust:

* **Boundaries.** Every row's Avro-encoded size is computed from its decoded values (varints, string lengths, union
  branches) and must equal its datum's length: a datum with trailing bytes, an overlong varint or anything that shifts
  the parse fails the check for its row (and the rows after it), which then take the per-datum path.
* **Validity.** The per-field rules of the event's pydantic model (``streams.fastpath.field_rules``: bounds, lengths,
  finiteness), the entity (known to the pack, of the model's kind and region), the parking rule and an RFC 3339 time
  the same way ``streams.fastpath.FastCheck`` judges them, as polars expressions. Like that check it is sound, not
  complete: a row it does not vouch for goes through ``FastDecoder.datum`` (fastavro, the compiled check, pydantic),
  which decides with the reason. Property tests (tests/streams/test_columnar.py) prove the same rows, values and dead
  letters as ``FastDecoder.rows``.

Rows come out as DataFrames per record name with the schema's columns plus ``_i`` (datum index in its record) and ``_t``
(``occurred_at`` as UTC epoch microseconds).
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from schemas.codec import SINGLE_OBJECT_MAGIC, SchemaStore, is_batch
from streams.fastpath import FieldRules, field_rules
from streams.ingest import FastDecoder, Rows
from twin.columnar import micros
from twin.events import BY_NAME, EARLIEST, LATEST, DeadLettered, Event, ParkingOccupancyReported
from twin.ids import EntityId, InvalidEntityId

_SYNC = b"plietsch:columns"  # the container's 16-byte sync marker
_PAD = 16
_TIME_RE = (r"^(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-5][0-9]"
            r"(?:\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$")
_PL_TYPES: dict[str, Any] = {"string": pl.String, "long": pl.Int64, "int": pl.Int32, "double": pl.Float64,
                             "float": pl.Float32, "boolean": pl.Boolean}


def _long(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z & ~0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _varint_size(x: pl.Expr) -> pl.Expr:
    """Bytes of the zig-zag varint of a signed 64-bit integer expression: 7 bits a byte, at least one."""
    z = (pl.when(x >= 0).then(x.cast(pl.UInt64) * 2)
         .otherwise((-(x + 1)).cast(pl.UInt64) * 2 + 1))
    bits = 64 - z.bitwise_leading_zeros().cast(pl.Int64)
    return pl.max_horizontal((bits + 6) // 7, pl.lit(1, pl.Int64))


def _len_size(n: pl.Expr) -> pl.Expr:
    """Bytes of the varint of a length (>= 0): zigzag(n) = 2n."""
    bits = 64 - (n.cast(pl.UInt64) * 2).bitwise_leading_zeros().cast(pl.Int64)
    return pl.max_horizontal((bits + 6) // 7, pl.lit(1, pl.Int64))


def _type_size(t: Any, col: pl.Expr) -> pl.Expr | None:
    if isinstance(t, list):  # a union: one varint byte for the branch (at most 64 branches), then the value
        if len(t) != 2 or "null" not in t:
            return None
        other = t[1] if t[0] == "null" else t[0]
        inner = _type_size(other, col)
        if inner is None:
            return None
        return pl.when(col.is_null()).then(pl.lit(1, pl.Int64)).otherwise(inner + 1)
    if t in ("long", "int"):
        return _varint_size(col.cast(pl.Int64))
    if t == "string":
        n = col.str.len_bytes().cast(pl.Int64)
        return _len_size(n) + n
    if t == "double":
        return pl.lit(8, pl.Int64)
    if t == "float":
        return pl.lit(4, pl.Int64)
    if t == "boolean":
        return pl.lit(1, pl.Int64)
    if t == "null":
        return pl.lit(0, pl.Int64)
    return None  # records, arrays, maps, enums, bytes, logical types: the per-datum path


def polars_schema(raw: dict[str, Any]) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for f in raw["fields"]:
        t = f["type"]
        if isinstance(t, list) and len(t) == 2 and "null" in t:
            t = t[1] if t[0] == "null" else t[0]
        if not isinstance(t, str) or t not in _PL_TYPES:
            return None
        out[f["name"]] = _PL_TYPES[t]
    return out


def _rule_expr(name: str, r: FieldRules, dtype: Any) -> pl.Expr | None:
    """``FastCheck``'s test of one field as a polars expression (None: this column's type does not fit the rule)."""
    c = pl.col(name)
    if r.ann is float:
        if dtype not in (pl.Float64, pl.Float32, pl.Int64, pl.Int32):
            return None
        tests = [c.is_not_null()]
        if dtype in (pl.Float64, pl.Float32):
            tests.append(~c.is_nan())  # polars orders NaN above everything; Python's comparisons with NaN are false
            if r.finite:
                tests.append(c.is_finite())
    elif r.ann is int:
        if dtype not in (pl.Int64, pl.Int32):
            return None
        tests = [c.is_not_null()]
    else:
        if dtype is not pl.String:
            return None
        tests = [c.is_not_null()]
        if r.min_len is not None:
            tests.append(c.str.len_chars() >= r.min_len)
        if r.max_len is not None:
            tests.append(c.str.len_chars() <= r.max_len)
    for op, value in r.bounds:
        tests.append({">=": c >= value, ">": c > value, "<=": c <= value, "<": c < value}[op])
    body = pl.all_horizontal(tests)
    return (c.is_null() | body) if r.optional else body


def _time_exprs() -> tuple[pl.Expr, pl.Expr]:
    """(ok, UTC epoch microseconds) of ``occurred_at``; ok reads the microseconds from column ``_t``. ok only where
    ``FastCheck`` would parse it the same way (the shape is checked by the pattern, seconds <= 59, offsets within a day,
    year >= 1; the calendar by the parser)."""
    s = pl.col("occurred_at")
    t = s.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%#z", strict=False, time_zone="UTC", time_unit="us").dt.epoch("us")
    parsed = pl.col("_t")  # the parse is the costly part: evaluated once, into _t, and the check reads the column
    ok = (s.str.contains(_TIME_RE) & parsed.is_not_null() & (parsed >= micros(EARLIEST)) &
          (parsed < micros(LATEST))).fill_null(False)
    return ok, t


@dataclass
class Plan:
    """How a writer schema's batch is decoded and checked as columns."""

    name: str
    header: bytes  # the object container's header for this schema
    columns: list[str]
    schema: dict[str, Any]
    size: pl.Expr
    check: pl.Expr  # true where the row is valid for sure


@dataclass
class Batch:
    """Records decoded for the hot path: valid rows per record name as DataFrames (``_m``: the record's position in
    the list given, ``_i``: the datum's index in its record, ``_t``: UTC epoch microseconds), dead letters and datum
    counts per record position."""

    frames: dict[str, pl.DataFrame] = field(default_factory=dict)
    dead: dict[int, list[DeadLettered]] = field(default_factory=dict)
    datums: dict[int, int] = field(default_factory=dict)

    def rows(self, name: str, records: Iterable[int] | None = None) -> pl.DataFrame | None:
        """The rows of record *name*, of the given record positions only (all when None), in record and datum order."""
        df = self.frames.get(name)
        if df is None or records is None:
            return df
        keep = set(records)
        if len(keep) == len(self.datums):
            return df
        return df.filter(pl.col("_m").is_in(sorted(keep)))


# Below this many datums of one topic, partition and writer schema in a take, the per-datum path decides them: the
# columns cost about 4 ms per group whatever its size (polars evaluates the size and validity expressions once per
# call), the per-datum path about 18 us a datum. At the 200 readings/s of ``make run`` a take's groups hold a few
# datums each, and the columns' fixed cost was 40 % of the worker's processing (py-spy); ``bench/take_cost.py``
# measures a take both ways.
MIN_COLUMNAR = 128


class ColumnarDecoder(FastDecoder):
    """``FastDecoder`` with ``batch()``: the same verdicts, as columns (groups of at least ``min_columnar`` datums)."""

    def __init__(self, *args: Any, min_columnar: int = MIN_COLUMNAR, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.min_columnar = min_columnar
        # the schemas by fingerprint (single-object encoding); a registry codec's datums never take the columns
        self.store: SchemaStore = getattr(self.codec, "store", None) or SchemaStore()
        self._plans: dict[tuple[str, bytes], Plan | None] = {}
        self.columnar_rows = 0
        self.slow_rows = 0

    def _regions(self, model: type[Event]) -> dict[str, str] | None:
        """Entity id -> region for the entities a reading of *model* may concern (``FastCheck.entity_ok`` plus the
        decoder's known entities and kinds)."""
        if self.known_entities is None:
            return None
        out: dict[str, str] = {}
        for eid in self.known_entities:
            try:
                parsed = EntityId.parse(str(eid))
            except InvalidEntityId:
                continue
            if model.entity_kind is not None and parsed.kind is not model.entity_kind:
                continue
            kind = self.entity_kinds.get(str(eid))
            if kind is not None and kind != getattr(model, "sensor_kind", kind):
                continue
            out[str(eid)] = parsed.region
        return out

    def plan(self, topic: str, header: bytes) -> Plan | None:
        key = (topic, header)
        if key not in self._plans:
            self._plans[key] = self._make_plan(topic, header)
        return self._plans[key]

    def _make_plan(self, topic: str, header: bytes) -> Plan | None:
        if header[:2] != SINGLE_OBJECT_MAGIC:
            return None
        entry = self.store.by_fingerprint.get(header[2:10])
        if entry is None or entry.version != "current":  # older writer versions are resolved by fastavro, per datum
            return None
        name, raw = entry.name, entry.raw
        allowed = self.expected.get(topic)
        model = BY_NAME.get(name)
        if (allowed is not None and name not in allowed) or model is None or not issubclass(model, Event):
            return None
        if self.check_for(name) is None:  # the per-datum check could not be compiled for this model: neither can this
            return None
        schema = polars_schema(raw)
        if schema is None or set(schema) != set(model.model_fields):
            return None
        sizes = [_type_size(f["type"], pl.col(f["name"])) for f in raw["fields"]]
        if any(s is None for s in sizes):
            return None
        tests: list[pl.Expr] = []
        for fname, info in model.model_fields.items():
            if fname in ("occurred_at", "entity_id"):
                continue
            rules = field_rules(info)
            e = None if rules is None else _rule_expr(fname, rules, schema[fname])
            if e is None:
                return None
            tests.append(e)
        regions = self._regions(model)
        if regions is None or schema["entity_id"] is not pl.String or schema["occurred_at"] is not pl.String:
            return None
        tests.append(pl.col("entity_id").replace_strict(regions, default=None, return_dtype=pl.String) == pl.col("region"))
        if issubclass(model, ParkingOccupancyReported):
            tests.append(pl.col("occupied") <= pl.col("capacity"))
        schema_json = json.dumps(raw).encode()
        container = (b"Obj\x01" + _long(2) + _long(11) + b"avro.schema" + _long(len(schema_json)) + schema_json
                     + _long(10) + b"avro.codec" + _long(4) + b"null" + b"\x00" + _SYNC)
        size = sizes[0]
        for s in sizes[1:]:
            size = size + s  # type: ignore[operator]
        return Plan(name, container, [f["name"] for f in raw["fields"]], schema, size,  # type: ignore[arg-type]
                    pl.all_horizontal(tests).fill_null(False))

    def batch(self, msgs: list[Any]) -> Batch:
        """Decode Kafka records (``topic``, ``partition``, ``offset``, ``key``, ``value``, ``headers``) together: the
        datums of every batch record of one writer schema go through one decode and one evaluation of the checks
        (when they are at least ``min_columnar``); the others go through the per-datum path, into one frame per name."""
        out = Batch()
        groups: dict[tuple[str, int, bytes], list[tuple[int, list[bytes]]]] = {}
        slow: list[tuple[int, list[bytes], Iterable[int], bool]] = []  # (record, datums, which, single) per datum
        frame_sets: list[dict[str, pl.DataFrame]] = []
        for k, msg in enumerate(msgs):
            rows = Rows()
            datums = self.datums(rows, msg.topic, msg.partition, msg.offset, msg.key, msg.value, msg.headers)
            out.datums[k] = rows.datums
            if datums is None:
                out.dead[k] = rows.dead
                continue
            n = len(datums)
            if is_batch(msg.headers):
                head = datums[0][:10]
                if b"".join([d[:10] for d in datums]) == head * n and self.plan(msg.topic, head) is not None:
                    groups.setdefault((msg.topic, msg.partition, head), []).append((k, datums))
                    continue
            slow.append((k, datums, range(n), n == 1 and not is_batch(msg.headers)))
        for (topic, partition, head), items in groups.items():
            if sum(len(ds) for _, ds in items) < self.min_columnar:
                slow.extend((k, datums, range(len(datums)), False) for k, datums in items)
                continue
            plan = self.plan(topic, head)
            assert plan is not None  # noqa: S101 - checked above
            frame = self._columns(plan, items, topic, partition)
            if frame is None:  # one broken datum spoils the whole decode: the records one by one
                for k, datums in items:
                    frame = self._columns(plan, [(k, datums)], topic, partition)
                    if frame is None:
                        slow.append((k, datums, range(len(datums)), False))
                    else:
                        frame_sets.append(self._checked(out, plan, frame, msgs, {k: datums}))
                continue
            frame_sets.append(self._checked(out, plan, frame, msgs, dict(items)))
        if slow:
            frame_sets.append(self._records_slow(out, msgs, slow))
        by_name: dict[str, list[pl.DataFrame]] = {}
        for frames in frame_sets:
            for name, df in frames.items():
                by_name.setdefault(name, []).append(df)
        for name, dfs in by_name.items():
            df = dfs[0] if len(dfs) == 1 else pl.concat(dfs, how="vertical")
            out.frames[name] = df.sort(["_m", "_i"]) if len(dfs) > 1 else df
        return out

    def _checked(self, out: Batch, plan: Plan, frame: pl.DataFrame, msgs: list[Any],
                 datums: dict[int, list[bytes]]) -> dict[str, pl.DataFrame]:
        """The rows the columns vouch for, plus what the per-datum path accepts of the others, as frames."""
        ok = frame["_ok"]
        good = frame.filter(ok).drop("_ok")
        frames: dict[str, pl.DataFrame] = {}
        if len(good) < len(frame):
            bad = frame.filter(~ok).select("_m", "_i")
            by_record: dict[int, list[int]] = {}
            for k, i in bad.iter_rows():
                by_record.setdefault(k, []).append(i)
            for k, idx in by_record.items():
                for name, df in self._record_slow(out, k, msgs[k], datums[k], idx, False).items():
                    frames[name] = pl.concat([frames[name], df], how="vertical") if name in frames else df
        self.columnar_rows += len(good)
        if plan.name in frames:
            good = pl.concat([good, frames.pop(plan.name)], how="vertical").sort(["_m", "_i"])
        if len(good):
            frames[plan.name] = good
        return frames

    def _record_slow(self, out: Batch, k: int, msg: Any, datums: list[bytes], indexes: Iterable[int],
                     single: bool) -> dict[str, pl.DataFrame]:
        return self._records_slow(out, {k: msg}, [(k, datums, indexes, single)])

    def _records_slow(self, out: Batch, msgs: Any, items: list[tuple[int, list[bytes], Iterable[int], bool]]
                      ) -> dict[str, pl.DataFrame]:
        """The per-datum path for these (record position, datums, which of them, single) as one frame per name, in
        record and datum order; dead letters into *out* (capped per record)."""
        rows_all: list[tuple[str, dict[str, Any], datetime]] = []
        indexes_all: list[int] = []
        records: list[int] = []
        for k, datums, indexes, single in sorted(items, key=lambda item: item[0]):
            msg = msgs[k]
            rows = Rows()
            accepted = self._slow(rows, msg.topic, msg.partition, msg.offset, msg.key, datums, indexes, single)
            self.cap(rows, msg.topic, msg.partition, msg.offset, msg.key, msg.value, len(datums))
            if rows.dead:
                out.dead.setdefault(k, []).extend(rows.dead)
            rows_all.extend(rows.rows)
            indexes_all.extend(accepted)
            records.extend([k] * len(accepted))
        return rows_to_frames(self, rows_all, indexes_all, records)

    def _slow(self, out: Rows, topic: str, partition: int, offset: int, key: bytes | None, datums: list[bytes],
              indexes: Iterable[int], single: bool) -> list[int]:
        """The per-datum path for these datums; returns the indexes of the datums it accepted, in order."""
        accepted = []
        for i in indexes:
            before = len(out.rows)
            self.datum(out, topic, partition, offset, key, datums[i], -1 if single else i)
            if len(out.rows) > before:
                accepted.append(i)
            self.slow_rows += 1
        return accepted

    def _columns(self, plan: Plan, items: list[tuple[int, list[bytes]]], topic: str, partition: int) -> pl.DataFrame | None:
        body = b"".join([d[10:] for _, ds in items for d in ds])
        n = sum(len(ds) for _, ds in items)
        # zero padding: a datum cut short at the end reads zeros instead of running off the block (the size check
        # then refuses it); anything else broken makes the reader fail, and the per-datum path says what is wrong
        padded = body + bytes(_PAD)
        try:
            df = pl.read_avro(io.BytesIO(plan.header + _long(n) + _long(len(padded)) + padded + _SYNC))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # noqa: BLE001 - invalid UTF-8, a length beyond the block (a Rust panic: BaseException)
            return None
        if len(df) != n or df.columns != plan.columns:
            return None
        ok_t, t = _time_exprs()
        meta = pl.DataFrame({
            "_len": [len(d) - 10 for _, ds in items for d in ds],
            "_m": [k for k, ds in items for _ in ds],
            "_i": [i for _, ds in items for i in range(len(ds))],
        }, schema={"_len": pl.Int64, "_m": pl.Int64, "_i": pl.Int64})
        check = (plan.size == pl.col("_len")) & plan.check & ok_t
        home = self.home.get(topic) if self.home is not None else None
        if home is not None:  # an entity of another partition: the per-datum path says why
            check = check & (pl.col("entity_id").replace_strict(home[1], default=partition, return_dtype=pl.Int64)
                             == partition)
        return pl.concat([df, meta], how="horizontal").with_columns(_t=t).with_columns(_ok=check).drop("_len")


def rows_to_frames(dec: ColumnarDecoder, rows: list[tuple[str, dict[str, Any], datetime]],
                   indexes: Iterable[int], record: int | list[int] = 0) -> dict[str, pl.DataFrame]:
    """Light rows (the per-datum path's) as frames like ``batch``'s: the schema's columns, ``_m`` (*record*: one
    position for all rows, or one per row), ``_i`` and ``_t``."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    records = record if isinstance(record, list) else itertools.repeat(record)
    for (name, rec, t), i, m in zip(rows, indexes, records, strict=False):
        r = dict(rec)
        if isinstance(r.get("occurred_at"), datetime):
            r["occurred_at"] = r["occurred_at"].isoformat()
        r["_m"] = m
        r["_i"] = i
        r["_t"] = micros(t)
        by_name.setdefault(name, []).append(r)
    frames = {}
    for name, recs in by_name.items():
        schema = polars_schema(dec.store.schema(name).raw)
        if schema is None:  # a schema the columns cannot hold: keep Python objects
            frames[name] = pl.DataFrame(recs)
            continue
        frames[name] = pl.DataFrame(recs, schema={**schema, "_m": pl.Int64, "_i": pl.Int64, "_t": pl.Int64})
    return frames
