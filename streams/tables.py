"""Agent state that commits with its effects: partitioned tables, their changelogs, outputs and applied-offset markers
in one Kafka transaction per processed batch.

Each agent owns named tables (``dict[bytes, JSON value]``), split by input partition, with one compacted changelog topic
per table, ``<app_id>-<table>-changelog`` (the name Faust gives its table changelogs, so tools and checkpoints find them),
co-partitioned with the agent's input topics. For partition *p* the agent has one confluent-kafka transactional producer
with ``transactional.id = <app_id>-<agent>-<p>``: when *p* moves to another worker, that worker's
``init_transactions`` fences the old owner (a zombie cannot commit any more) and aborts what it left open.

:meth:`TxTables.commit` writes, in one transaction on *p*'s producer, every changed table key (tombstone for a delete),
the outputs the batch caused (twin.updates, twin.alerts, twin.aggregates, dead letters, ...) and the applied-offset
markers ``__applied__|<epoch>|<topic>|<partition>`` (contract 3); only after the commit succeeds does it apply the
changes to the in-memory table. So the in-memory state never runs ahead of the committed state: a transient failure
(broker away, timeout) is retried with backoff from the same state, and a fatal one (fenced, producer broken) ends the
process with a clear message, to restart and recover. A partition's tables are loaded (read_committed: aborted writes
are never seen) the first time a record of that partition arrives, after its producer has fenced the previous owner,
and dropped when the partition is revoked.

A broker that shows an aborted transaction's records to read_committed readers (Tansu does) could show part of a
transaction that a crash cut short: a table with some of its new values but the old markers, so the redo would fold the
same input into those values a second time. Hence every changelog record of a transaction carries its number
(header ``plietsch-txseq``; one more than the partition's last committed number) and each table's write ends with the
``__txseq__`` record. Loading (and the checkpointer) read through a :class:`TxGate`: a write is applied once it has
reached its end, and dropped when the next transaction carries the same number (it is the redo) or when the log ends;
a later, larger number proves the earlier write was committed, so compaction that removed an end record loses nothing.

Tansu (0.6, memory storage) can also leave a *committed* transaction invisible to read_committed readers for good: a
transaction that ends while an earlier-begun transaction of another producer on a partition they share is still open
stays "prepared", and it is only finalised when a later transaction end lists it among its overlaps, which the other
producer's end need not do (``txn_end`` and ``overlapping_transactions`` in its ``dynostore.rs``; reproduced in
``tests/streams/test_settle.py``). The last stable offset of every partition it wrote (changelogs and shared outputs)
then stops there. Two settle writes finalise it: a new owner, right after fencing, finding a changelog partition *p*
that ends beyond what read_committed readers may read, writes a tombstone of :data:`SETTLE_KEY` to each changelog
partition *p* before it loads (its transaction overlaps every earlier one of *p*, all of which are prepared by then);
and :meth:`TxTables.settle`, called by the worker when a partition has been idle, does the same 1, 4 and 16 s after
its last commit (each delay drawn +-20 %, so that workers that committed at the same moment do not settle in step),
which finalises the partition's own held transactions once the others it waited for have ended. A settle write ends
like any transaction: while another producer's transaction on a shared partition is open, it is held too. So each
settle is checked (read_committed end = high watermark on the partition's changelogs): the spell ends once the
partition is final, and a partition still held after the three goes on settling every :data:`SETTLE_AGAIN_S` until
it is. Loading does the same: it reads a partition only once its changelogs are final, as anything held there would
be left out of the loaded state while the input offsets that caused it are already committed. On Apache Kafka these
are one small transaction each, without effect on state.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from infra.kafka_security import secured
from streams import metrics
from streams.publisher import producer_config

log = logging.getLogger("plietsch.streams.tables")

MARKER_PREFIX = b"__applied__|"
SEQ_KEY = b"__txseq__"  # per table and partition: the number of the last transaction that wrote it (ends each write)
SEQ_HEADER = "plietsch-txseq"
SETTLE_KEY = b"__settle__"  # a tombstone of it ends a settle write (see the module's docstring); never a table key
SETTLE_AFTER_S = (1.0, 4.0, 16.0)  # idle time after a partition's last commit at which it writes a settle transaction
SETTLE_AGAIN_S = 10.0  # after those: how often a partition whose changelogs are still held settles again
SETTLE_JITTER = 0.2  # each delay drawn from +-20 % around its value
FINAL = 10**9  # settles of a spell: the partition is final, no more settle writes until its next commit
V = TypeVar("V")


def is_internal(key: bytes) -> bool:
    """A table key the platform keeps for itself (markers, transaction numbers), not agent or processor state."""
    return key.startswith(MARKER_PREFIX) or key in (SEQ_KEY, SETTLE_KEY)

Output = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]] | None]


class Encoded:
    """A table value with its JSON bytes already made (the agent needed them for an output anyway)."""

    __slots__ = ("data", "value")

    def __init__(self, value: Any, data: bytes) -> None:
        self.value, self.data = value, data


def marker_key(epoch: str, topic: str, partition: int) -> bytes:
    return f"__applied__|{epoch}|{topic}|{partition}".encode()


def dumps(value: Any) -> bytes:
    """Compact JSON, as ``json.dumps(value, separators=(",", ":"))`` gives it (orjson: about ten times faster on the
    aggregate partials the hot path writes per batch; non-string keys become strings as with json)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def crash(message: str) -> None:
    """End the worker now: its in-memory state may be ahead of what is committed. It restarts and recovers."""
    log.critical("%s; the worker stops so that it restarts from its committed state", message)
    logging.shutdown()
    sys.stderr.flush()
    os._exit(70)


class TxTables:
    """The tables of one agent, per input partition, committed with the agent's outputs and markers."""

    def __init__(self, bootstrap: str, app_id: str, agent: str, tables: Iterable[str], partitions: int, *,
                 extra_producer_config: dict[str, Any] | None = None, on_crash: Callable[[str], None] = crash) -> None:
        self.bootstrap, self.app_id, self.agent = bootstrap, app_id, agent
        self.names = list(tables)
        self.partitions = partitions
        self.extra = dict(extra_producer_config or {})
        self.on_crash = on_crash
        self.parts: dict[int, dict[str, dict[bytes, Any]]] = {}
        self.producers: dict[int, Producer] = {}
        self._topics_ready = False
        # partition -> (monotonic time of its last commit, settle writes since, factor on this spell's settle delays)
        self.idle: dict[int, tuple[float, int, float]] = {}
        # a committer (one thread, shared by all of a worker's tables): commit() hands it the transaction and returns;
        # see commit() and wait()
        self.committer: ThreadPoolExecutor | None = None
        self.pending: dict[int, Future[None]] = {}
        self.jitter = SETTLE_JITTER  # the settle delays' spread (a test sets 0)

    def changelog(self, table: str) -> str:
        return f"{self.app_id}-{table}-changelog"

    def ensure_topics(self, timeout: float = 15.0) -> None:
        admin = AdminClient(secured({"bootstrap.servers": self.bootstrap}))
        existing = set(admin.list_topics(timeout=timeout).topics)
        wanted = [NewTopic(self.changelog(n), self.partitions, 1, config={"cleanup.policy": "compact"})
                  for n in self.names if self.changelog(n) not in existing]
        for name, fut in (admin.create_topics(wanted, operation_timeout=timeout).items() if wanted else []):
            try:
                fut.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise RuntimeError(f"could not create changelog topic {name!r}: {exc}") from exc

    # -- partitions ---------------------------------------------------------------------------------------------------

    def producer(self, p: int) -> Producer:
        prod = self.producers.get(p)
        if prod is None:
            cfg = producer_config(self.bootstrap, **{"transactional.id": f"{self.app_id}-{self.agent}-{p}",
                                                     "enable.idempotence": True, "linger.ms": 2,
                                                     "transaction.timeout.ms": 60_000, **self.extra})
            prod = Producer(cfg)
            for attempt in range(1, 1000):
                try:
                    prod.init_transactions(30)  # fences a previous owner of this partition and aborts its open work
                    break
                except KafkaException as exc:
                    err = exc.args[0]
                    if err.fatal() or not err.retriable():
                        self.on_crash(f"{self.agent}: cannot start the transactional producer for partition {p}: {err}")
                        raise
                    log.warning("%s: the broker did not answer init_transactions for partition %d (%s), retry %d",
                                self.agent, p, err, attempt)
                    time.sleep(min(5.0, 0.2 * attempt))
            self.producers[p] = prod
        return prod

    def part(self, p: int) -> dict[str, dict[bytes, Any]]:
        """The tables of partition *p*, loaded from the changelogs the first time (after fencing the previous owner);
        after its last commit has ended (:meth:`wait`)."""
        if p in self.pending:
            self.wait(p)
        tables = self.parts.get(p)
        if tables is None:
            if not self._topics_ready:
                self.ensure_topics()
                self._topics_ready = True
            self.producer(p)
            attempt = 0
            while self._held(p):  # finalise what an earlier owner's transactions left prepared (module docstring)
                attempt += 1
                if attempt == 1 or attempt % 10 == 0:
                    log.warning("%s: partition %d's changelogs end in transactions read_committed readers cannot pass; "
                                "a settle write finalises them before the load (attempt %d)", self.agent, p, attempt)
                if attempt > 1:  # the last settle was held by another producer's open transaction: let it end
                    time.sleep(min(5.0, 0.2 * attempt) * random.uniform(1 - SETTLE_JITTER, 1 + SETTLE_JITTER))
                self._transact(p, self._settle_records(p))
            started = time.monotonic()
            tables = self.parts[p] = self._load(p)
            log.info("%s: partition %d recovered from the changelogs in %.2f s (%s)", self.agent, p,
                     time.monotonic() - started, ", ".join(f"{n}: {len(t)} keys" for n, t in tables.items()))
        return tables

    def open(self, ps: Iterable[int]) -> None:
        """Load partitions *ps* at once (see :func:`open_parts`)."""
        open_parts([(self, p) for p in ps])

    def drop(self, p: int) -> None:
        """Forget partition *p* (revoked): its state is another worker's now; reloaded if it comes back."""
        self.wait(p)
        self.parts.pop(p, None)
        self.producers.pop(p, None)
        self.idle.pop(p, None)

    def _held(self, p: int) -> bool:
        """Whether a changelog partition *p* ends beyond what read_committed readers may read (Tansu then answers a
        read_committed "latest offset" below the high watermark): a transaction there is open or held."""
        ends: dict[str, list[tuple[int, int]]] = {}
        for isolation in ("read_committed", "read_uncommitted"):
            c = Consumer(secured({"bootstrap.servers": self.bootstrap, "group.id": f"{self.app_id}-probe-{uuid.uuid4().hex[:8]}",
                                  "enable.auto.commit": False, "isolation.level": isolation}))
            try:
                ends[isolation] = [c.get_watermark_offsets(TopicPartition(self.changelog(n), p), timeout=10)
                                   for n in self.names]
            finally:
                c.close()
        return ends["read_committed"] != ends["read_uncommitted"]

    def _settle_records(self, p: int) -> list[tuple[str, bytes | None, bytes | None, int | None, Any]]:
        return [(self.changelog(n), SETTLE_KEY, None, p, None) for n in self.names]

    def settle(self, now: float | None = None) -> list[int]:
        """Write a settle transaction on each loaded partition that has been idle for the next of
        :data:`SETTLE_AFTER_S` since its last commit, and after those every :data:`SETTLE_AGAIN_S` while its changelogs
        stay held (see the module's docstring); returns those partitions. A partition found final after a settle
        writes no more until its next commit. Call it from the thread that commits, between batches."""
        now = time.monotonic() if now is None else now
        done = []
        for p, (last, n, factor) in list(self.idle.items()):
            if p not in self.parts or n >= FINAL or now - last < factor * self._settle_after(n):
                continue
            self.wait(p)  # never beside a commit of p on the same producer
            if self.idle[p][0] != last:  # that commit started a new spell
                continue
            if n >= len(SETTLE_AFTER_S) and (n - len(SETTLE_AFTER_S)) % 10 == 0:
                log.warning("%s: partition %d's transactions are still held by the broker after %d settle writes "
                            "(another producer's transaction on a shared partition was open each time); settling "
                            "again every %.0f s until they are final", self.agent, p, n, SETTLE_AGAIN_S)
            self._transact(p, self._settle_records(p))
            self.idle[p] = (last, FINAL if not self._held(p) else n + 1, factor)
            done.append(p)
        return done

    @staticmethod
    def _settle_after(n: int) -> float:
        """Idle seconds after which settle write number *n* (from 0) of a spell is due (before the jitter)."""
        if n < len(SETTLE_AFTER_S):
            return SETTLE_AFTER_S[n]
        return SETTLE_AFTER_S[-1] + SETTLE_AGAIN_S * (n - len(SETTLE_AFTER_S) + 1)

    def drop_all(self) -> None:
        for p in list(self.parts):
            self.drop(p)

    def _load(self, p: int, timeout: float = 180.0) -> dict[str, dict[bytes, Any]]:
        tables: dict[str, dict[bytes, Any]] = {n: {} for n in self.names}
        by_topic = {self.changelog(n): tables[n] for n in self.names}
        c = Consumer(secured({"bootstrap.servers": self.bootstrap, "group.id": f"{self.app_id}-restore-{uuid.uuid4().hex[:8]}",
                      "enable.auto.commit": False, "isolation.level": "read_committed", "enable.partition.eof": True,
                      "fetch.max.bytes": 16 * 1024 * 1024}))
        try:
            todo = set()
            for topic in by_topic:
                lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if hi > lo:
                    todo.add(topic)
            if not todo:
                return tables
            c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in todo])
            logs = {t: ChangelogReader(by_topic[t], f"{self.agent} partition {p} {t}", self.agent) for t in todo}
            deadline = time.monotonic() + timeout
            while todo:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.agent}: changelogs {sorted(todo)} partition {p} not read to their end "
                                       f"within {timeout:.0f} s; is the broker overloaded?")
                for msg in c.consume(5000, 0.5):
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            if msg.topic() in todo:
                                todo.discard(msg.topic())
                                left_out = logs[str(msg.topic())].end()
                                if left_out:
                                    log.warning("%s: partition %d of %s held transactions cut short by a crash; their "
                                                "%d records were left out (the redo writes them again)", self.agent, p,
                                                msg.topic(), left_out)
                            continue
                        raise KafkaException(err)
                    logs[str(msg.topic())].add(msg.key() or b"", msg.value(), msg.headers())
        finally:
            c.close()
        return tables

    # -- markers --------------------------------------------------------------------------------------------------------

    def applied(self, p: int, epoch: str, topic: str, partition: int, table: str | None = None) -> int:
        """The last applied origin offset for (epoch, topic, partition) in a table of partition *p* (default: the
        first), -1 when none."""
        value = self.part(p)[table or self.names[0]].get(marker_key(epoch, topic, partition))
        return -1 if value is None else int(value)

    # -- commit ---------------------------------------------------------------------------------------------------------

    def commit(self, p: int, changes: dict[str, dict[bytes, Any]], outputs: list[Output],
               markers: dict[str, dict[tuple[str, str, int], int]]) -> None:
        """Commit the changes of partition *p*'s tables, the outputs and the markers (per table) in one transaction,
        then apply the changes in memory. Transient failures are retried with backoff; a fatal one ends the process.

        Order inside the transaction: the outputs first (and waited for), then per table its changes and, last, its
        markers, on the table's changelog partition *p* (one ordered, idempotent stream). A broker that shows the
        records of an aborted transaction to read_committed readers (Tansu 0.6 does, measured: see README "Hot path")
        then still never shows a table's marker without that table's changes nor before the outputs; what a crash
        cut short is done again, with the same output event ids.

        With a :attr:`committer`, the transaction (produce, flush, commit) and the in-memory apply run in its thread,
        and this returns once the records are built: the caller works on another partition meanwhile. The committer
        must be ONE thread for all of a worker's tables, so that the worker's transactions never overlap each other
        (Tansu can hold a transaction that ends while another producer's is open on a shared partition: README "Tansu
        and held transactions"), and nothing else may write a transaction meanwhile (settle: wait for all first). Partition
        *p* itself stays behind its commit: :meth:`part` (every read of *p*'s tables and markers), the next commit on
        *p*, :meth:`settle` and :meth:`drop` wait for it. The caller must :meth:`wait` before it lets the input offsets
        of the batch be committed (Faust's ack), so a batch's offsets never run ahead of its transaction."""
        tables = self.part(p)
        changes = {n: dict(kv) for n, kv in changes.items()}
        for n, ms in markers.items():
            for (epoch, topic, partition), offset in ms.items():
                changes.setdefault(n, {})[marker_key(epoch, topic, partition)] = offset  # insertion order: markers last
        seq = 1 + max(int(t.get(SEQ_KEY, 0)) for t in tables.values())
        for kv in changes.values():
            kv.pop(SEQ_KEY, None)
            kv[SEQ_KEY] = seq  # each table's write ends with its transaction number
        seq_header = [(SEQ_HEADER, str(seq).encode())]
        records: list[tuple[str, bytes | None, bytes | None, int | None, list[tuple[str, bytes]] | None]] = []
        for topic, key, value, headers in outputs:
            records.append((topic, key, value, None, headers))
        n_outputs = len(records)
        for n, kv in changes.items():
            topic = self.changelog(n)
            for k, v in kv.items():
                data = None if v is None else v.data if isinstance(v, Encoded) else dumps(v)
                records.append((topic, k, data, p, seq_header))
        if self.committer is not None:
            self.pending[p] = self.committer.submit(self._commit_now, p, tables, changes, records, n_outputs)
        else:
            self._commit_now(p, tables, changes, records, n_outputs)

    def _commit_now(self, p: int, tables: dict[str, dict[bytes, Any]], changes: dict[str, dict[bytes, Any]],
                    records: list[tuple[str, bytes | None, bytes | None, int | None, Any]], n_outputs: int) -> None:
        self._transact(p, records, n_outputs)
        self.idle[p] = (time.monotonic(), 0, random.uniform(1 - self.jitter, 1 + self.jitter))
        for n, kv in changes.items():
            table = tables[n]
            for k, v in kv.items():
                if v is None:
                    table.pop(k, None)
                else:
                    table[k] = v.value if isinstance(v, Encoded) else v

    def wait(self, p: int | None = None) -> None:
        """Wait until the commit handed to the commit thread for partition *p* (all partitions: None) has ended;
        re-raises what ended it (a fatal error has ended the process already, unless ``on_crash`` returned)."""
        for q in [p] if p is not None else list(self.pending):
            fut = self.pending.get(q)
            if fut is not None:
                try:
                    fut.result()
                finally:
                    if self.pending.get(q) is fut:
                        del self.pending[q]

    def pending_commits(self) -> list[Future[None]]:
        """The commits still running in the commit thread (to wait for without blocking a thread)."""
        return list(self.pending.values())

    def _transact(self, p: int, records: list[tuple[str, bytes | None, bytes | None, int | None, Any]],
                  n_outputs: int = 0) -> None:
        """Write *records* (topic, key, value, partition, headers) in one transaction on partition *p*'s producer, the
        first *n_outputs* of them flushed before the rest; transient failures are retried, fatal ones end the process."""
        prod = self.producer(p)
        started = time.perf_counter()
        attempt = 0
        began = False
        while True:
            try:
                if not began:
                    prod.begin_transaction()
                    began = True
                    for i, (topic, key, value, part, headers) in enumerate(records):
                        if i == n_outputs and n_outputs:
                            self._flush(prod)
                        self._produce(prod, topic, key, value, part, headers)
                prod.commit_transaction(30)
                break
            except KafkaException as exc:
                err = exc.args[0]
                attempt += 1
                if err.fatal() or err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                                 KafkaError.INVALID_PRODUCER_EPOCH):
                    metrics.TX_ABORTS.labels(self.agent).inc()
                    self.on_crash(f"{self.agent}: the transaction on partition {p} failed for good ({err})")
                    raise
                if err.txn_requires_abort():
                    metrics.TX_ABORTS.labels(self.agent).inc()
                    self._abort(prod, p)
                    began = False
                elif not err.retriable():
                    metrics.TX_ABORTS.labels(self.agent).inc()
                    self.on_crash(f"{self.agent}: the transaction on partition {p} failed ({err})")
                    raise
                delay = min(5.0, 0.1 * 2 ** min(attempt, 6))
                (log.warning if attempt <= 3 or attempt % 10 == 0 else log.debug)(
                    "%s: transaction on partition %d not committed (%s); retry %d in %.1f s", self.agent, p, err, attempt, delay)
                metrics.TX_RETRIES.labels(self.agent).inc()
                time.sleep(delay)
        metrics.TX_COMMITS.labels(self.agent).inc()
        metrics.TX_SECONDS.labels(self.agent).observe(time.perf_counter() - started)

    @staticmethod
    def _flush(prod: Producer) -> None:
        while prod.flush(30):
            log.warning("outputs not delivered within 30 s; waiting on")

    def _abort(self, prod: Producer, p: int) -> None:
        for attempt in range(1, 1000):
            try:
                prod.abort_transaction(30)
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.fatal() or not err.retriable():
                    self.on_crash(f"{self.agent}: could not abort the transaction on partition {p} ({err})")
                    raise
                time.sleep(min(5.0, 0.2 * attempt))

    @staticmethod
    def _produce(prod: Producer, topic: str, key: bytes | None, value: bytes | None, partition: int | None,
                 headers: list[tuple[str, bytes]] | None) -> None:
        kwargs: dict[str, Any] = {"key": key, "value": value}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                prod.produce(topic, **kwargs)
                return
            except BufferError:
                prod.poll(0.05)


def open_parts(pairs: Iterable[tuple[TxTables, int]], max_threads: int = 16) -> None:
    """Load the tables of several (tables, partition) pairs side by side, and return when all are loaded.

    Each partition's start (``init_transactions``, which fences the previous owner, the settle probe and the changelog
    read) is mostly waiting on the broker, and the partitions are independent of each other; one after another, a
    worker that is assigned twelve partitions (three agents of four) spent seconds on them while its first batches
    waited (0.3-0.5 s each on a loaded machine, measured). The calling thread blocks meanwhile, so no batch of these
    tables runs during the load; the order within one partition (fence, settle, load) stays as in :meth:`TxTables.part`."""
    todo = [(tx, p) for tx, p in dict.fromkeys(pairs) if p not in tx.parts]
    for tx in dict.fromkeys(tx for tx, _ in todo):  # once per agent, before its partitions start side by side
        if not tx._topics_ready:
            tx.ensure_topics()
            tx._topics_ready = True
    if len(todo) <= 1:
        for tx, p in todo:
            tx.part(p)
        return
    with ThreadPoolExecutor(max_workers=min(max_threads, len(todo)), thread_name_prefix="plietsch-open") as pool:
        for fut in [pool.submit(tx.part, p) for tx, p in todo]:
            fut.result()  # re-raises what failed to load (a fatal Kafka error has ended the process already)


class TxGate(Generic[V]):
    """Holds back one changelog partition's records of a transaction until its write ends (the ``__txseq__`` record):
    a write a crash cut short (visible on Tansu) is dropped when its redo (same number) or a smaller number comes, or
    left held at the end of the log. A larger number proves the held write committed (compaction may have removed its
    end). Records without a number (written before numbers existed) pass at once. Used by the tables' load and by the
    checkpointer, so neither ever holds part of a transaction."""

    def __init__(self, name: str = "changelog") -> None:
        self.name = name
        self.seq = -1
        self.held: list[tuple[bytes | None, V]] = []
        self.dropped = 0

    def feed(self, key: bytes | None, item: V, headers: Any) -> list[tuple[bytes | None, V]]:
        """The records (key, item) that may be applied now, in log order."""
        seq = txseq(headers)
        if seq is None:
            return [(key, item)]
        out: list[tuple[bytes | None, V]] = []
        if seq != self.seq:
            if seq > self.seq:
                out, self.held = self.held, []
            else:  # the redo of a write that never reached its end: what it left is dropped
                if seq < self.seq and self.held:
                    log.warning("%s: transaction number %d after %d; the log is not one producer's", self.name, seq,
                                self.seq)
                self.dropped += len(self.held)
                self.held = []
            self.seq = seq
        self.held.append((key, item))
        if key == SEQ_KEY:
            out, self.held = out + self.held, []
        return out

    def end(self) -> int:
        """At the end of the log: drop a write that has not reached its end; returns how many records were dropped in
        all (cut-short writes met while reading included)."""
        self.dropped += len(self.held)
        self.held = []
        return self.dropped


_TOMBSTONE = object()


def _changelog_doc(key: bytes | None, value: bytes | None, headers: Any) -> tuple[Any, str | None]:
    """(the value parsed, or _TOMBSTONE for None; why the record cannot be the worker's, or None)."""
    try:
        txseq(headers)
    except ValueError:
        return None, "its transaction number header is not an integer"
    if value is None:
        return _TOMBSTONE, None  # a tombstone deletes (what it deletes may not exist: harmless)
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        try:
            doc = json.loads(value)  # what json reads and orjson does not (NaN, as json.dumps wrote it once)
        except (ValueError, UnicodeDecodeError):
            return None, f"its value is not JSON ({value[:40]!r})"
    k = key or b""
    if (k.startswith(MARKER_PREFIX) or k == SEQ_KEY) and (isinstance(doc, bool) or not isinstance(doc, int)):
        return None, f"its value {value[:40]!r} is not an integer (key {k[:60]!r})"
    return doc, None  # a table entry: any JSON (a processor's state may be a number); its agent reads its own keys


def changelog_problem(key: bytes | None, value: bytes | None, headers: Any = None) -> str | None:
    """Why a changelog record cannot be one the worker wrote (None when it can): every value is JSON, an applied-offset
    marker's and a transaction number's an integer, and a transaction number header an integer. A foreign client's junk
    on a changelog (issue 15) is then skipped and counted by the tables' load and the checkpointer instead of ending the
    worker at every start (the topic is compacted: the junk stays). A well-formed record under a real key (a forgery)
    cannot be told from the worker's own: only ACLs on the changelogs stop it."""
    return _changelog_doc(key, value, headers)[1]


class ChangelogReader:
    """Applies one changelog partition, record by record, to *table*, through a :class:`TxGate` (see the module's
    docstring). A record no worker could have written (:func:`changelog_problem`) is skipped, counted in
    :attr:`skipped` (and on /metrics per *agent*) and logged once per reader."""

    def __init__(self, table: dict[bytes, Any], name: str = "changelog", agent: str = "") -> None:
        self.table = table
        self.name = name
        self.agent = agent
        self.gate: TxGate[Any] = TxGate(name)
        self.skipped = 0

    def add(self, key: bytes, value: bytes | None, headers: Any = None) -> None:
        doc, why = _changelog_doc(key, value, headers)
        if why is not None:
            self.skipped += 1
            metrics.CHANGELOG_SKIPPED.labels(self.agent).inc()
            if self.skipped == 1:
                log.warning("%s: skipping a record no worker wrote (key %r: %s); further ones are counted "
                            "(plietsch_worker_changelog_records_skipped)", self.name, key[:60], why)
            return
        for k, d in self.gate.feed(key, doc, headers):
            if d is _TOMBSTONE:
                self.table.pop(k or b"", None)
            else:
                self.table[k or b""] = d

    def end(self) -> int:
        """At the end of the log; returns how many records of cut-short writes were left out in all."""
        return self.gate.end()


def apply_changelog(table: dict[bytes, Any], records: Iterable[tuple[bytes, bytes | None, Any]]) -> int:
    """Apply (key, value, headers) records of one changelog partition in log order; returns the records left out."""
    reader = ChangelogReader(table)
    for key, value, headers in records:
        reader.add(key, value, headers)
    return reader.end()


def txseq(headers: Any) -> int | None:
    """The transaction number a changelog record carries (header ``plietsch-txseq``), None when it has none."""
    if not headers:
        return None
    for k, v in (headers.items() if isinstance(headers, dict) else headers):
        if k == SEQ_HEADER and v is not None:
            return int(v)
    return None
