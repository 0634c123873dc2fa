"""The scenario service (``plietsch scenarios``): storm-surge and traffic scenarios in a process of their own, beside
the live worker, not inside it.

A flood run is minutes of numpy on one core; inside the worker's process it took the worker's CPU and cut the live
update rate about four times (issue 15). Here it runs in its own process at a lower CPU priority (``nice``
:data:`NICE`), so on a loaded machine the live twin goes first.

Two processes: the service follows ``scenario.requests`` all the time, so that a request is answered at once with
``queued`` (and its place in the queue) and a cancel lands at once, also for a run that has not started; a child
process (spawned once, lower priority still) takes the runs in order, one at a time
(``streams.scenarios.ScenarioRunner``), cancellable between steps, and sends its progress back. In one process the
run's Python held the interpreter lock against the reader, and a cancel took seconds to be read on a loaded machine.
A child that dies (killed, out of memory) fails its run with the reason and is started again.
Offsets: the service commits, after each change, the offset of the oldest request not yet finished, so a request is
never lost: after a crash, the runs that had not finished are read again and run again. A request whose results are
already on disk (a completed run read again) is not run twice. A stop (SIGTERM, Ctrl-C) ends the run in hand and the
queued ones as ``failed`` with what to do ("ask for the scenario again"): the memory-only broker forgets requests when
it stops, so a run again after a restart is nothing a planner could count on. Bad records become dead letters.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from infra.kafka_security import secured
from schemas.codec import CodecError
from streams.catalogue import DEAD_LETTERS, SCENARIO_REQUESTS, SCENARIO_RESULTS
from streams.ingest import RecordDecoder
from streams.publisher import producer_config
from streams.scenarios import AGENT, ScenarioRunner, scenario_dir
from streams.serde import Codec, encode_event
from twin.events import DeadLettered, Event, ScenarioCancelRequested, ScenarioProgressed, ScenarioRequested

log = logging.getLogger("plietsch.scenario_service")
NICE = 10  # added to the process's CPU niceness: the live worker goes first when both want the CPU
STOPPED = "stopped before it finished: the scenario service was stopped; ask for the scenario again"
STOPPED_QUEUED = "not started: the scenario service was stopped; ask for the scenario again"


@dataclass
class Emitter:
    """Scenario results and the scenario service's dead letters (outside the transactional hot path)."""

    codec: Codec
    producer: Producer

    def _produce(self, topic: str, key: bytes | None, value: bytes,
                 headers: list[tuple[str, str | bytes | None]] | None = None) -> None:
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, headers=headers or [])
                return
            except BufferError:
                self.producer.poll(0.05)

    def scenario(self, item: Event) -> None:
        self._produce(SCENARIO_RESULTS.name, item.entity_id.encode(), encode_event(self.codec, item))
        self.producer.flush(10)

    def dead(self, items: Iterable[DeadLettered]) -> None:
        for d in items:
            log.warning("dead letter from %s[%d]@%d: %s", d.original_topic, d.original_partition, d.original_offset, d.reason)
            try:
                value = encode_event(self.codec, d)
            except CodecError as exc:  # never drop: keep the raw bytes with the reason in headers
                value = d.original_value
                log.error("dead letter could not be encoded (%s); raw bytes kept", exc)
            self._produce(DEAD_LETTERS.name, d.original_topic.encode(), value,
                          [("reason", d.reason.encode()[:1000]), ("error-type", d.error_type.encode())])
        self.producer.flush(10)


def group_id(app_id: str) -> str:
    return f"{app_id}-scenarios"


class ScenarioService:
    def __init__(self, bootstrap: str, app_id: str, pack_dir: Path, data_dir: Path, codec: Codec) -> None:
        self.bootstrap = bootstrap
        self.group = group_id(app_id)
        self.pack_dir = pack_dir
        self.data_dir = data_dir
        self.decoder = RecordDecoder(codec, AGENT, expected={SCENARIO_REQUESTS.name: SCENARIO_REQUESTS.value_schemas})
        self.queue: OrderedDict[str, tuple[int, ScenarioRequested]] = OrderedDict()  # sid -> (offset, request)
        self.running: tuple[str, int, ScenarioRequested] | None = None  # the run in the child: (sid, offset, request)
        self.next_offset = 0  # one past the last record read
        self.stop_event = threading.Event()
        self.stats = {"requests": 0, "cancels": 0, "completed": 0, "failed": 0, "cancelled": 0, "dead_letters": 0,
                      "runner_restarts": 0}
        self._ctx = multiprocessing.get_context("spawn")  # no fork of a process with Kafka clients' threads
        self._tasks: Any = None
        self._results: Any = None
        self._cancel = self._ctx.Event()
        self._child: Any = None
        self._committed = -1
        self._consumer: Consumer | None = None
        self.emitter = Emitter(codec, Producer(producer_config(bootstrap)))

    # -- progress ----------------------------------------------------------------------------------------------------

    def _event(self, req: ScenarioRequested, status: str, message: str) -> None:
        self.emitter.scenario(ScenarioProgressed(
            entity_id=req.entity_id, region=req.region, occurred_at=datetime.now(UTC), source=AGENT,
            status=status, step=0, steps=0, message=message))  # type: ignore[arg-type]

    # -- the child ---------------------------------------------------------------------------------------------------

    def _start_child(self) -> None:
        self._tasks, self._results = self._ctx.Queue(), self._ctx.Queue()
        self._child = self._ctx.Process(target=_run_child, name="plietsch-scenario-runner", daemon=True,
                                        args=(str(self.pack_dir), str(self.data_dir), self._tasks, self._results,
                                              self._cancel))
        self._child.start()

    def _pump(self) -> None:
        """Progress from the child into the results topic; a finished run frees the child for the next."""
        while True:
            try:
                item = self._results.get_nowait()
            except queue.Empty:
                break
            if item[0] == "progress":
                event: ScenarioProgressed = item[1]
                if not (event.status == "cancelled" and self.stop_event.is_set()):  # our stop: reported as failed
                    self.emitter.scenario(event)
            elif (item[0] == "done" and self.running and self.running[0] == item[1]
                  and not (item[2] == "cancelled" and self.stop_event.is_set())):  # else cut short by our stop: it
                self.stats[item[2]] = self.stats.get(item[2], 0) + 1  # stays in self.running, and run() fails it
                self.running = None
        if self.running and not self._child.is_alive() and not self.stop_event.is_set():
            sid, _, req = self.running
            code = self._child.exitcode
            log.error("the scenario runner process ended (exit code %s) while running %s; restarting it", code, sid)
            self._event(req, "failed", f"the run ended unexpectedly (runner process exit code {code}); ask again")
            self.stats["failed"] += 1
            self.stats["runner_restarts"] += 1
            self.running = None
            self._start_child()

    def _dispatch(self) -> None:
        if self.running is None and self.queue and not self.stop_event.is_set():
            sid, (offset, req) = self.queue.popitem(last=False)
            self._cancel.clear()
            self.running = (sid, offset, req)
            self._tasks.put(req)

    # -- reading -----------------------------------------------------------------------------------------------------

    def _read(self, msg: Any) -> None:
        offset = msg.offset()
        decoded = self.decoder.decode(msg.topic(), msg.partition(), offset, msg.key(), msg.value(), msg.headers())
        if decoded.dead:
            self.stats["dead_letters"] += len(decoded.dead)
            self.emitter.dead(decoded.dead)
        for e in decoded.events:
            if isinstance(e, ScenarioRequested):
                self._request(e, offset)
            elif isinstance(e, ScenarioCancelRequested):
                self._cancel_run(e.entity_id)
        self.next_offset = offset + 1

    def _request(self, req: ScenarioRequested, offset: int) -> None:
        sid = req.entity_id
        self.stats["requests"] += 1
        if (scenario_dir(self.data_dir, sid) / "summary.json").is_file():
            log.info("scenario %s has its results already (a request read again after a restart): not run again", sid)
            return
        if sid in self.queue or (self.running and self.running[0] == sid):
            return
        ahead = len(self.queue) + (self.running is not None)
        self.queue[sid] = (offset, req)
        self._event(req, "queued", f"queued: {ahead} run(s) ahead" if ahead else "queued: starts now")

    def _cancel_run(self, sid: str) -> None:
        self.stats["cancels"] += 1
        if sid in self.queue:
            _, req = self.queue.pop(sid)
            self.stats["cancelled"] += 1
            self._event(req, "cancelled", "cancelled on request before it started")
        elif self.running and self.running[0] == sid:
            self._cancel.set()  # the child checks it between steps
        else:
            log.info("cancel of %s: not queued nor running here (finished already, or unknown)", sid)

    def _position(self) -> int:
        """The offset to commit: the oldest request not finished, else one past the last record read."""
        pending = [off for off, _ in self.queue.values()] + ([self.running[1]] if self.running else [])
        return min(pending) if pending else self.next_offset

    def _commit(self) -> None:
        position = self._position()
        if position != self._committed and self._consumer is not None:
            try:
                self._consumer.commit(offsets=[TopicPartition(SCENARIO_REQUESTS.name, 0, position)], asynchronous=False)
                self._committed = position
            except KafkaException as exc:  # transient (broker away): the next round commits again
                log.warning("could not commit the scenario requests' offset %d (%s); retried", position, exc)

    # -- the loop ----------------------------------------------------------------------------------------------------

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Read and run until *should_stop* (or :meth:`stop`); then the unfinished runs end as failed."""
        self._start_child()
        c = Consumer(secured({"bootstrap.servers": self.bootstrap, "group.id": self.group, "enable.auto.commit": False,
                              "auto.offset.reset": "earliest", "isolation.level": "read_committed"}))
        self._consumer = c
        # assigned, not subscribed: one service reads the topic's one partition (a group join took ~23 s on Tansu);
        # the group keeps the committed offset
        c.assign([self._start_at(c)])
        last_report = time.monotonic()
        try:
            while not (should_stop() or self.stop_event.is_set()):
                for msg in c.consume(100, 0.2):
                    err = msg.error()
                    if err is None:
                        self._read(msg)
                    elif err.code() != KafkaError._PARTITION_EOF:
                        log.warning("reading %s: %s (retried)", SCENARIO_REQUESTS.name, err)
                self._pump()
                self._dispatch()
                self._commit()
                if time.monotonic() - last_report >= 60:
                    last_report = time.monotonic()
                    log.info("scenario service: %s; queued %d, running %s", self.stats, len(self.queue),
                             self.running[0] if self.running else "none")
        finally:
            self.stop()
            self._end_child()
            self._fail_unfinished()
            c.close()

    def _end_child(self) -> None:
        """Cut the run in hand short (it stops between steps) and let the child end."""
        if self.running:
            self._cancel.set()
        self._tasks.put(None)
        deadline = time.monotonic() + 60
        while self._child.is_alive() and time.monotonic() < deadline:
            self._pump()
            time.sleep(0.1)
        self._pump()
        if self._child.is_alive():
            log.warning("the scenario runner did not end within 60 s; terminated")
            self._child.terminate()
            self._child.join(5)

    def _fail_unfinished(self) -> None:
        """On a stop: the run in hand (cut short) and the queued ones end as failed, with what to do, and their offsets
        are committed. The memory-only broker forgets requests at its stop, so running them again after a restart is
        not something a planner could count on; a clear "failed, ask again" is the same on every broker."""
        unfinished = ([(self.running[2], True)] if self.running else []) + [(req, False) for _, req in self.queue.values()]
        for req, started in unfinished:
            try:
                self._event(req, "failed", STOPPED if started else STOPPED_QUEUED)
            except Exception as exc:  # noqa: BLE001 - the broker may be gone already; the requests are then read again
                log.warning("could not report %s as stopped (%s)", req.entity_id, exc)
                return
        self.queue.clear()
        self.running = None
        self._commit()
        if unfinished:
            log.info("stopped: %d unfinished run(s) reported failed (ask again)", len(unfinished))

    def _start_at(self, c: Consumer) -> TopicPartition:
        """The partition at the committed offset (from the beginning when none), asking until the broker answers."""
        for attempt in range(1, 10**6):
            try:
                tp = c.committed([TopicPartition(SCENARIO_REQUESTS.name, 0)], timeout=10)[0]
                self._committed = tp.offset
                return TopicPartition(SCENARIO_REQUESTS.name, 0, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
            except KafkaException as exc:
                if self.stop_event.wait(min(5.0, 0.5 * attempt)):
                    break
                log.warning("the broker did not say where the scenario requests stand (%s); retry %d", exc, attempt)
        return TopicPartition(SCENARIO_REQUESTS.name, 0, OFFSET_BEGINNING)

    def stop(self) -> None:
        self.stop_event.set()


def _end_with(parent: Any) -> None:
    parent.join()
    os._exit(0)


def _run_child(pack_dir: str, data_dir: str, tasks: Any, results: Any, cancel: Any) -> None:
    """The runner process: runs each request it is given, sends progress and the end back; None ends it."""
    from twin.region import load_pack

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the service ends the child
    parent = multiprocessing.parent_process()
    if parent is not None:  # a service killed outright (SIGKILL, out of memory) takes its runner along: no orphan
        threading.Thread(target=_end_with, args=(parent,), name="parent-watch", daemon=True).start()
    lower_priority()
    runner = ScenarioRunner(load_pack(Path(pack_dir)), Path(data_dir), lambda e: results.put(("progress", e)),
                            is_cancelled=lambda sid: cancel.is_set())
    while (req := tasks.get()) is not None:
        results.put(("done", req.entity_id, runner.execute(req)))


def lower_priority(nice: int = NICE) -> int:
    """Lower this process's CPU priority by *nice* (best effort); returns the niceness now."""
    try:
        return os.nice(nice)
    except OSError as exc:
        log.warning("could not lower the scenario service's CPU priority (%s); it runs at normal priority", exc)
        return os.nice(0)


def serve() -> None:
    """``plietsch scenarios``: the service on the settings' broker, region pack and data folder, until SIGTERM/Ctrl-C."""
    import signal

    from streams.catalogue import ensure_topics
    from streams.serde import make_codec
    from streams.settings import StreamSettings
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
    settings = StreamSettings()
    ensure_topics(settings.bootstrap_servers)
    niceness = lower_priority()
    service = ScenarioService(settings.bootstrap_servers, settings.app_id, settings.region_pack,
                              settings.data_dir, make_codec(settings.schema_registry_url))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: service.stop())
    log.info("scenario service: group %s, results under %s, CPU niceness %d", service.group,
             settings.data_dir / "scenarios", niceness)
    service.run()
    log.info("scenario service stopped: %s", service.stats)
