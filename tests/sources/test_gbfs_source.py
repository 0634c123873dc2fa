"""The GBFS 3.0 source against a real local HTTP server (``http.server`` in a thread) serving a GBFS 3.0 feed made
from MobilityData's example files (tests/fixtures/gbfs/mobilitydata/, Apache-2.0) with ETags and scripted failures, and
a real Kafka-protocol broker (Tansu) of this module's own, as the LoRaWAN and PEGELONLINE source tests do: its readings
and dead letters must not reach the session's shared worker (on another region pack) nor other tests' counts."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.broker import EmbeddedBroker, free_port
from schemas.codec import SingleObjectCodec, is_batch, iter_batch
from streams.catalogue import DEAD_LETTERS, SENSOR_TOPICS
from streams.consume import drain
from streams.publisher import EventPublisher
from streams.settings import StreamSettings
from streams.sources.gbfs.mapping import Mapping
from streams.sources.gbfs.source import GbfsSettings, GbfsSource
from tests.helpers import ROOT, wait_for
from tests.httpfake import LocalHttp
from tests.sources.threaded import SourceThread
from twin.region import load_pack

pytestmark = pytest.mark.broker

FIX = ROOT / "tests" / "fixtures" / "gbfs" / "mobilitydata"
EXAMPLE = {n: json.loads((FIX / f"{n}.json").read_text()) for n in ("gbfs", "station_information", "station_status",
                                                                    "vehicle_status")}
STATIONS = [s["station_id"] for s in EXAMPLE["station_information"]["data"]["stations"]]
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class FakeGbfs(LocalHttp):
    def __init__(self, ttl: int = 0) -> None:
        super().__init__()
        self.docs: dict[str, Any] = {}
        self.failures: dict[str, list[int]] = {}
        self.requests: list[tuple[str, dict[str, str], int]] = []
        self.etags = True
        self.base = f"{self.root}/gbfs/3.0/test"
        self.url = f"{self.base}/gbfs.json"
        self.docs["gbfs"] = {"last_updated": rfc3339(T0), "ttl": ttl, "version": "3.0", "data": {"feeds": [
            {"name": n, "url": f"{self.base}/{n}.json"} for n in ("system_information", "station_information",
                                                                 "station_status", "vehicle_status")]}}
        info = copy.deepcopy(EXAMPLE["station_information"])
        info["ttl"] = 86400
        self.docs["station_information"] = info
        self.docs["vehicle_status"] = copy.deepcopy(EXAMPLE["vehicle_status"])
        self.docs["station_status"] = self.status({sid: (i % 7, 10 - i % 7) for i, sid in enumerate(STATIONS)}, T0, ttl)

    @staticmethod
    def status(counts: dict[str, tuple[int, int | None]], at: datetime, ttl: int = 0) -> dict[str, Any]:
        """A station_status with (bikes, docks or None for a station without docks) per station, reported at *at*."""
        stations = []
        for sid, (bikes, docks) in counts.items():
            s: dict[str, Any] = {"station_id": sid, "num_vehicles_available": bikes, "is_installed": True,
                                 "is_renting": True, "is_returning": True, "last_reported": rfc3339(at)}
            if docks is not None:
                s["num_docks_available"] = docks
            stations.append(s)
        return {"last_updated": rfc3339(at), "ttl": ttl, "version": "3.0", "data": {"stations": stations}}

    def report(self, station: str, bikes: int, docks: int, at: datetime) -> None:
        """One station reports anew; the file's last_updated moves with it."""
        with self.lock:
            doc = self.docs["station_status"]
            for s in doc["data"]["stations"]:
                if s["station_id"] == station:
                    s.update(num_vehicles_available=bikes, num_docks_available=docks, last_reported=rfc3339(at))
            doc["last_updated"] = rfc3339(at)

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        name = h.path.rsplit("/", 1)[-1].removesuffix(".json")
        with self.lock:
            fails = self.failures.get(name) or []
            if fails:
                status = fails.pop(0)
                self.requests.append((name, dict(h.headers.items()), status))
                return self.send(h, status, b'{"error": "scripted failure"}', {"Retry-After": "0"} if status == 429 else {})
            if name not in self.docs:
                self.requests.append((name, dict(h.headers.items()), 404))
                return self.send(h, 404, b'{"error": "not found"}')
            doc = self.docs[name]
            body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
            etag = '"' + hashlib.sha1(body).hexdigest() + '"'
            headers = {"ETag": etag, "Last-Modified": "Tue, 24 Nov 2026 09:00:00 GMT"} if self.etags else {}
            if self.etags and h.headers.get("If-None-Match") == etag:
                self.requests.append((name, dict(h.headers.items()), 304))
                return self.send(h, 304, b"", headers)
            self.requests.append((name, dict(h.headers.items()), 200))
            return self.send(h, 200, body, headers)

    def answered(self, name: str, status: int | None = None) -> list[dict[str, str]]:
        with self.lock:
            return [hd for n, hd, st in self.requests if n == name and (status is None or st == status)]


def later(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


PACK = load_pack(StreamSettings().region_pack)
SENSORS = sorted(str(k) for k, s in PACK.sensors.items() if s.sensor_kind == "bike_share")


@pytest.fixture
def feed() -> Iterator[FakeGbfs]:
    f = FakeGbfs()
    yield f
    f.close()


def mapping(system: str, n: int = 2) -> Mapping:
    return Mapping(system, PACK.id, dict(zip(STATIONS[:n], SENSORS[:n], strict=True)))


class Running(SourceThread):
    """A GbfsSource in a thread of the test process (real HTTP, real Kafka); ``stop`` joins it."""

    def __init__(self, feed: FakeGbfs, bootstrap: str, data_dir: Path, m: Mapping, **extra: Any) -> None:
        settings = GbfsSettings(url=feed.url, min_interval_s=0.2, backoff_base_s=0.05, backoff_cap_s=2.0,
                                metrics_port=free_port(), **extra)
        self.lines: list[str] = []
        self._start(GbfsSource(settings, m, EventPublisher(bootstrap, SingleObjectCodec(), linger_ms=5), data_dir,
                               report=self.lines.append))

    def files(self, file: str, outcome: str) -> float:
        return self.value("plietsch_gbfs_files_total", file=file, outcome=outcome)


def readings(bootstrap: str, system: str) -> list[dict[str, Any]]:
    codec, out = SingleObjectCodec(), []
    for m in drain(bootstrap, SENSOR_TOPICS["bike_share"].name, missing_ok=True):
        for d in (iter_batch(m.value()) if is_batch(m.headers()) else [m.value()]):
            _, rec = codec.decode(d)
            if rec["source"].startswith(f"GBFS {system} "):
                out.append(rec)
    return out


def dead_letters(bootstrap: str, system: str) -> list[dict[str, Any]]:
    codec, out = SingleObjectCodec(), []
    for m in drain(bootstrap, DEAD_LETTERS.name, missing_ok=True):
        _, rec = codec.decode(m.value())
        if rec["original_topic"].startswith(f"gbfs:{system}/"):
            rec["_headers"] = {k: v.decode() for k, v in (m.headers() or [])}
            out.append(rec)
    return out


def test_station_status_becomes_readings_once_and_unchanged_files_publish_nothing(feed: FakeGbfs, bootstrap: str,
                                                                                  tmp_path: Path) -> None:
    feed.docs["station_status"] = FakeGbfs.status({STATIONS[0]: (3, 9), STATIONS[1]: (0, None), STATIONS[2]: (5, 5),
                                                   STATIONS[3]: (1, 1)}, T0)
    vehicles = feed.docs["vehicle_status"]["data"]["vehicles"]
    vehicles[0].update(station_id=STATIONS[0])
    vehicles[1].update(station_id=STATIONS[0], is_reserved=True)
    vehicles[2].update(is_disabled=True)
    src = Running(feed, bootstrap, tmp_path, mapping("t1"))
    try:
        wait_for(lambda: src.value("plietsch_gbfs_readings_published_total") == 2, 15, "2 readings")
        wait_for(lambda: src.files("station_status", "unchanged") >= 2, 15, "two unchanged polls of station_status")
        assert src.files("station_status", "fetched") == 1 and src.value("plietsch_gbfs_readings_published_total") == 2
        # the conditional request: the ETag and Last-Modified of the last body, answered 304
        again = feed.answered("station_status", 304)
        assert again and again[-1]["If-None-Match"].startswith('"') and again[-1]["If-Modified-Since"]
        assert src.value("plietsch_gbfs_unknown_stations") == 2
        assert src.value("plietsch_gbfs_stations", mapped="true") == 2
        assert src.value("plietsch_gbfs_vehicles", station=STATIONS[0], status="available") == 1
        assert src.value("plietsch_gbfs_vehicles", station=STATIONS[0], status="reserved") == 1
        assert src.value("plietsch_gbfs_vehicles", station="free_floating", status="disabled") == 1
        assert src.value("plietsch_gbfs_vehicles", station="free_floating", status="available") == 4
        # a new report of one station: one reading more, the other station's unchanged report is not sent again
        feed.report(STATIONS[0], 2, 10, later(1))
        wait_for(lambda: src.value("plietsch_gbfs_readings_published_total") == 3, 15, "the 3rd reading")
        wait_for(lambda: src.value("plietsch_gbfs_duplicates_total") >= 1, 15, "station 2's unchanged report counted")
        assert src.value("plietsch_gbfs_up") == 1 and src.value("plietsch_gbfs_dead_letters_total", reason="schema") == 0
    finally:
        src.stop()
    got = readings(bootstrap, "t1")
    assert sorted((r["entity_id"], r["bikes_available"], r["docks_available"], r["occurred_at"]) for r in got) == sorted([
        (SENSORS[0], 3, 9, T0.isoformat()), (SENSORS[1], 0, 0, T0.isoformat()),  # no docks (virtual station): 0 free
        (SENSORS[0], 2, 10, later(1).isoformat())])
    assert len({r["event_id"] for r in got}) == 3 and all(r["region"] == "kiel" for r in got)
    dead = dead_letters(bootstrap, "t1")  # the unknown stations, once each though every poll shows them
    assert sorted(d["original_key"].decode() for d in dead) == sorted(STATIONS[2:4])
    assert {d["error_type"] for d in dead} == {"unknown_station"}
    d2 = next(d for d in dead if d["original_key"].decode() == STATIONS[2])
    name = feed.docs["station_information"]["data"]["stations"][2]["name"][0]["text"]
    assert f"station '{STATIONS[2]}' ({name!r} at" in d2["reason"] and "PLIETSCH_GBFS_STATIONS" in d2["reason"]
    assert json.loads(d2["original_value"])["station_status"]["num_vehicles_available"] == 5
    state = json.loads((tmp_path / "gbfs" / "t1" / "state.json").read_text())
    assert state["stations"][STATIONS[0]] == later(1).isoformat() and len(state["dead"]) == 2


def test_each_file_is_polled_by_its_own_ttl(feed: FakeGbfs, bootstrap: str, tmp_path: Path) -> None:
    feed.docs["station_status"]["ttl"] = 0  # "always refresh": read every min_interval_s (0.2 s here)
    feed.docs["vehicle_status"]["ttl"] = 1
    feed.docs["station_information"]["ttl"] = 86400  # read once in this test's life
    feed.docs["gbfs"]["ttl"] = 3600
    src = Running(feed, bootstrap, tmp_path, mapping("t2"))
    try:
        wait_for(lambda: len(feed.answered("station_status")) >= 12, 20, "twelve polls of station_status")
        wait_for(lambda: len(feed.answered("vehicle_status")) >= 2, 20, "a second poll of vehicle_status")
        n_status, n_vehicles = len(feed.answered("station_status")), len(feed.answered("vehicle_status"))
        assert len(feed.answered("station_information")) == 1 and len(feed.answered("gbfs")) == 1
        assert n_vehicles < n_status  # ttl 1 s against 0.2 s
    finally:
        src.stop()
    assert len(readings(bootstrap, "t2")) == 2  # polled often, published once


def test_a_file_that_fails_the_schema_is_a_dead_letter_with_its_reason_and_the_rest_goes_on(feed: FakeGbfs, bootstrap: str,
                                                                                        tmp_path: Path) -> None:
    status = FakeGbfs.status({STATIONS[0]: (4, 6), STATIONS[1]: (2, 8)}, T0)
    status["data"]["stations"][1]["num_vehicles_available"] = -1  # one bad station: only it is left out
    feed.docs["station_status"] = status
    feed.docs["vehicle_status"].update(version="2.3", ttl=0)  # a bad document: all of it is left out
    feed.docs["station_information"] = b"<html>Service busy</html>"  # not JSON at all
    feed.etags = False  # every poll reads the body again: a defect it repeats is still dead-lettered once
    src = Running(feed, bootstrap, tmp_path, mapping("t3"))
    try:
        wait_for(lambda: src.value("plietsch_gbfs_readings_published_total") == 1, 15, "the good station's reading")
        wait_for(lambda: src.files("vehicle_status", "invalid") >= 3, 15, "three polls of the bad vehicle_status")
        wait_for(lambda: src.files("station_status", "unchanged") >= 2, 15, "two polls more of station_status")
        assert src.value("plietsch_gbfs_dead_letters_total", reason="schema") == 2  # once each, not once per poll
        assert src.value("plietsch_gbfs_dead_letters_total", reason="not_json") == 1
        assert src.value("plietsch_gbfs_vehicles", station="free_floating", status="available") == 0
        feed.docs["station_status"] = FakeGbfs.status({STATIONS[0]: (4, 6), STATIONS[1]: (3, 7)}, later(2))  # fixed
        wait_for(lambda: src.value("plietsch_gbfs_readings_published_total") == 3, 15, "both stations after the fix")
    finally:
        src.stop()
    dead = {d["original_topic"]: d for d in dead_letters(bootstrap, "t3")}
    assert sorted(dead) == ["gbfs:t3/station_information", "gbfs:t3/station_status", "gbfs:t3/vehicle_status"]
    assert "is not JSON" in dead["gbfs:t3/station_information"]["reason"]
    assert dead["gbfs:t3/station_information"]["original_value"] == b"<html>Service busy</html>"
    bad = dead["gbfs:t3/station_status"]
    assert bad["error_type"] == "schema" and bad["_headers"]["error-type"] == "schema"
    assert "/data/stations/1/num_vehicles_available: -1 is less than the minimum of 0" in bad["reason"]
    assert "station_status.json" in bad["reason"] and "1 entry not used, the rest was" in bad["reason"]
    assert json.loads(bad["original_value"]) == status  # the body exactly as served
    whole = dead["gbfs:t3/vehicle_status"]
    assert "/version: '3.0' was expected" in whole["reason"] and "the whole file was not used" in whole["reason"]
    assert sorted((r["entity_id"], r["bikes_available"]) for r in readings(bootstrap, "t3")) == [
        (SENSORS[0], 4), (SENSORS[0], 4), (SENSORS[1], 3)]


def test_transient_failures_are_retried_with_backoff_never_dead_lettered(feed: FakeGbfs, bootstrap: str,
                                                                         tmp_path: Path) -> None:
    feed.docs["station_status"] = FakeGbfs.status({STATIONS[0]: (1, 2), STATIONS[1]: (3, 4)}, T0)  # both mapped
    feed.failures = {"gbfs": [503], "station_status": [503, 500, 429]}
    src = Running(feed, bootstrap, tmp_path, mapping("t4"))
    try:
        wait_for(lambda: src.value("plietsch_gbfs_readings_published_total") == 2, 15, "2 readings after the failures")
        assert src.value("plietsch_gbfs_retries_total", cause="http") == 4
        assert src.files("station_status", "failed") == 3 and src.files("gbfs", "failed") == 1
        assert src.value("plietsch_gbfs_failing", file="station_status") == 0
    finally:
        src.stop()
    assert dead_letters(bootstrap, "t4") == []
    failing = [line for line in src.lines if "retrying with backoff" in line and line.startswith("GBFS station_status")]
    assert [("HTTP 503" in f, "HTTP 500" in f, "HTTP 429" in f) for f in failing] == [
        (True, False, False), (False, True, False), (False, False, True)]  # once per change of state
    assert any("GBFS station_status: answering again after 3 failed" in line for line in src.lines)
    assert len(readings(bootstrap, "t4")) == 2


def test_connection_refused_is_retried_not_fatal(tmp_path: Path) -> None:
    settings = GbfsSettings(url=f"http://127.0.0.1:{free_port()}/gbfs.json", backoff_base_s=0.05, backoff_cap_s=2.0)
    src = GbfsSource(settings, mapping("t5"), EventPublisher("127.0.0.1:1", SingleObjectCodec()), tmp_path,
                     report=lambda m: None)
    feed = src.feeds["gbfs"]
    for _ in range(3):
        src.step(feed)
    assert feed.failures == 3 and feed.state.startswith("transient ConnectError")
    assert src.metrics.registry.get_sample_value("plietsch_gbfs_failing", {"file": "gbfs"}) == 1
    assert src.metrics.registry.get_sample_value("plietsch_gbfs_retries_total", {"cause": "http"}) == 3


def test_a_restart_publishes_nothing_twice(feed: FakeGbfs, bootstrap: str, tmp_path: Path) -> None:
    first = Running(feed, bootstrap, tmp_path, mapping("t6", 3))
    try:
        wait_for(lambda: first.value("plietsch_gbfs_readings_published_total") == 3, 15, "3 readings")
    finally:
        first.stop()
    feed.etags = False  # full bodies again, same last_reported: the source itself must know what it sent
    second = Running(feed, bootstrap, tmp_path, mapping("t6", 3))
    try:
        wait_for(lambda: second.files("station_status", "fetched") == 1, 15, "station_status read by the second run")
        assert second.value("plietsch_gbfs_duplicates_total") == 3
        assert second.value("plietsch_gbfs_readings_published_total") == 0
        feed.report(STATIONS[1], 6, 4, later(5))
        wait_for(lambda: second.value("plietsch_gbfs_readings_published_total") == 1, 15, "the one new report")
        wait_for(lambda: second.files("station_status", "unchanged") >= 2, 15, "unchanged by last_updated (no ETag)")
    finally:
        second.stop()
    got = readings(bootstrap, "t6")
    assert len(got) == 4 and len({r["event_id"] for r in got}) == 4
    assert not [d for d in dead_letters(bootstrap, "t6") if d["error_type"] == "unknown_station" and
                d["original_key"].decode() in STATIONS[:3]]
    unknown = [d for d in dead_letters(bootstrap, "t6") if d["error_type"] == "unknown_station"]
    assert len(unknown) == len(STATIONS) - 3  # once per station over both runs


def test_the_command_runs_serves_metrics_logs_its_health_and_stops_on_sigterm(feed: FakeGbfs, bootstrap: str,
                                                                              tmp_path: Path) -> None:
    stations = tmp_path / "stations.json"
    stations.write_text(json.dumps({"system": "t7", "stations": {STATIONS[0]: SENSORS[0]}}))
    port = free_port()
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, PLIETSCH_DATA_DIR=str(tmp_path / "data"),
               PLIETSCH_GBFS_URL=feed.url, PLIETSCH_GBFS_STATIONS=str(stations), PLIETSCH_GBFS_MIN_INTERVAL_S="0.2",
               PLIETSCH_GBFS_HEALTH_EVERY_S="0.5", PLIETSCH_GBFS_METRICS_PORT=str(port))
    log = (tmp_path / "source.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "source", "gbfs"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)

    def published() -> bool:
        assert proc.poll() is None, (tmp_path / "source.log").read_text()
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return False
        return "plietsch_gbfs_readings_published_total 1.0" in text and "plietsch_gbfs_up 1.0" in text and \
            "readings 1," in (tmp_path / "source.log").read_text()

    try:
        wait_for(published, 30, "the reading on /metrics and a health line")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
    out = (tmp_path / "source.log").read_text()
    assert code == 0, out
    assert "GBFS source stopped" in out and "system t7, 1 station(s)" in out
    health = [line for line in out.splitlines() if line.startswith("GBFS health t7: ")]
    assert "station_status ok" in health[-1] and "readings 1, duplicates" in health[-1]
    assert [r["bikes_available"] for r in readings(bootstrap, "t7")] == [0]


def test_the_command_refuses_a_bad_mapping_with_what_to_change(tmp_path: Path) -> None:
    stations = tmp_path / "stations.json"
    stations.write_text(json.dumps({"stations": {"s1": "kiel:_:sensor:gauge-holtenau"}}))
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", PLIETSCH_DATA_DIR=str(tmp_path),
               PLIETSCH_GBFS_STATIONS=str(stations))
    env.pop("PLIETSCH_GBFS_URL", None)
    res = subprocess.run([sys.executable, "-m", "streams.cli", "source", "gbfs"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode != 0
    assert "has kind 'water_level'; a GBFS station needs a bike_share sensor" in res.stderr + res.stdout


def test_kafka_unreachable_is_retried_and_the_state_waits_for_the_flush(feed: FakeGbfs, paused_broker: EmbeddedBroker,
                                                                        tmp_path: Path) -> None:
    bootstrap, pid = paused_broker.bootstrap_servers, paused_broker._proc.pid  # type: ignore[union-attr]
    feed.docs["station_status"] = FakeGbfs.status({STATIONS[0]: (1, 9)}, T0)
    state = tmp_path / "gbfs" / "t8" / "state.json"
    src = Running(feed, bootstrap, tmp_path, mapping("t8"), flush_timeout_s=1.0)
    try:
        wait_for(lambda: src.value("plietsch_gbfs_readings_published_total") == 1, 15, "1 reading")
        before = state.read_text()
        os.kill(pid, signal.SIGSTOP)  # Kafka stops answering: a transient failure
        try:
            feed.report(STATIONS[0], 2, 8, later(1))
            wait_for(lambda: src.value("plietsch_gbfs_retries_total", cause="kafka") >= 1, 30, "a Kafka retry")
            assert state.read_text() == before  # not advanced before the flush succeeded
            assert src.value("plietsch_gbfs_readings_published_total") == 1
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_for(lambda: src.value("plietsch_gbfs_readings_published_total") == 2, 60, "the reading after Kafka came back")
        assert json.loads(state.read_text())["stations"][STATIONS[0]] == later(1).isoformat()
    finally:
        src.stop()
    got = {r["event_id"]: r["bikes_available"] for r in readings(bootstrap, "t8")}
    assert sorted(got.values()) == [1, 2]
    assert dead_letters(bootstrap, "t8") == []
    assert any("Kafka: writing the readings to Kafka failed" in line for line in src.lines)
