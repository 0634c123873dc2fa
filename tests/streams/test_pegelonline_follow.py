"""The continuous PEGELONLINE source against a real local HTTP server (``http.server`` in a thread, serving made-up
station metadata and generated measurements as the documented API does, with ETags and scripted failures) and a real
Kafka-protocol broker (Tansu, this module's own: its dead letters must not show in other tests' counts)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from infra.broker import EmbeddedBroker, free_port
from schemas.codec import SingleObjectCodec, is_batch, iter_batch
from streams.catalogue import DEAD_LETTERS, SENSOR_TOPICS, ensure_topics
from streams.consume import drain
from streams.publisher import EventPublisher
from streams.sources.pegelonline_follow import ConfigError, PegelSettings, PegelSource
from tests.helpers import ROOT, wait_for
from tests.httpfake import LocalHttp
from tests.sources.threaded import SourceThread

pytestmark = pytest.mark.broker

FIX = ROOT / "tests" / "fixtures" / "pegelonline"
HOLTENAU = json.loads((FIX / "station_holtenau.json").read_text())
NO_MW = json.loads((FIX / "station_no_mw.json").read_text())


class FakePegelonline(LocalHttp):
    """Station metadata by number or uuid; W measurements per uuid filtered by ``start`` (an ISO time or a duration);
    an ETag per body with 304 for a matching If-None-Match; ``failures`` answered first, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stations: dict[str, dict[str, Any]] = {}
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.failures: list[tuple[int, dict[str, str]]] = []
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.ignore_start = False
        self.url = f"{self.root}/webservices/rest-api/v2"

    def add_station(self, meta: dict[str, Any], number: str, uuid: str) -> None:
        self.stations[number] = self.stations[uuid] = dict(meta, number=number, uuid=uuid)
        self.rows.setdefault(uuid, [])

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        u = urlparse(h.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        with self.lock:
            self.requests.append((u.path, q, {k: v for k, v in h.headers.items()}))
            parts = u.path.split("/stations/", 1)[-1].split("/")
            if u.path.endswith("/W/measurements.json") and len(parts) == 3:
                if self.failures:
                    status, headers = self.failures.pop(0)
                    return self.send(h, status, b'{"message": "scripted failure"}', headers)
                if parts[0] not in self.rows:
                    return self.send(h, 404, b'{"message": "station not found"}')
                body = json.dumps(self.select(self.rows[parts[0]], q.get("start", "P1D"))).encode()
                etag = '"' + hashlib.sha1(body).hexdigest() + '"'
                if h.headers.get("If-None-Match") == etag:
                    return self.send(h, 304, b"", {"ETag": etag})
                return self.send(h, 200, body, {"ETag": etag, "Last-Modified": "Tue, 24 Nov 2026 00:00:00 GMT"})
            if len(parts) == 1 and parts[0].endswith(".json") and parts[0][:-5] in self.stations:
                return self.send(h, 200, json.dumps(self.stations[parts[0][:-5]]).encode())
            return self.send(h, 404, b'{"message": "not found"}')

    def select(self, rows: list[dict[str, Any]], start: str) -> list[dict[str, Any]]:
        if self.ignore_start or start.startswith("P"):
            return rows
        t0 = datetime.fromisoformat(start)
        out = []
        for r in rows:
            try:
                t = datetime.fromisoformat(r["timestamp"])
                keep = t.tzinfo is None or t >= t0
            except (KeyError, ValueError):
                keep = True  # what the server cannot place is sent every time (the worst case for the client)
            if keep:
                out.append(r)
        return out

    def measurement_requests(self, uuid: str) -> list[tuple[dict[str, str], dict[str, str]]]:
        with self.lock:
            return [(q, hd) for p, q, hd in self.requests if p.endswith(f"/stations/{uuid}/W/measurements.json")]


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap_servers)
        yield broker.bootstrap_servers


@pytest.fixture
def fake() -> Iterator[FakePegelonline]:
    f = FakePegelonline()
    yield f
    f.close()


_CEST = timezone(timedelta(hours=2))  # PEGELONLINE answers in German local time with its offset


def rows(values: list[float], start: datetime | None = None) -> list[dict[str, Any]]:
    t = start or datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    return [{"timestamp": (t + timedelta(minutes=i)).astimezone(_CEST).isoformat(), "value": v} for i, v in enumerate(values)]


class Running(SourceThread):
    """A PegelSource in a thread of the test process (real HTTP, real Kafka); ``stop`` joins it."""

    def __init__(self, fake: FakePegelonline, bootstrap: str, data_dir: Path, stations: str, mean_cm: str = "",
                 **extra: Any) -> None:
        settings = PegelSettings(base_url=fake.url, stations=stations, mean_cm=mean_cm, interval_s=0.2,
                                 backoff_base_s=0.05, backoff_cap_s=2.0, metrics_port=free_port(), **extra)
        self.lines: list[str] = []
        self._start(PegelSource(settings, EventPublisher(bootstrap, SingleObjectCodec(), linger_ms=5), data_dir,
                                report=self.lines.append))


def readings(bootstrap: str, sensor: str) -> list[dict[str, Any]]:
    codec, out = SingleObjectCodec(), []
    for m in drain(bootstrap, SENSOR_TOPICS["water_level"].name):
        for d in (iter_batch(m.value()) if is_batch(m.headers()) else [m.value()]):
            _, rec = codec.decode(d)
            if rec["entity_id"] == sensor:
                out.append(rec)
    return out


def dead_letters(bootstrap: str, number: str) -> list[dict[str, Any]]:
    codec, out = SingleObjectCodec(), []
    for m in drain(bootstrap, DEAD_LETTERS.name, missing_ok=True):
        _, rec = codec.decode(m.value())
        if rec["original_topic"] == f"pegelonline:{number}":
            rec["_headers"] = {k: v.decode() for k, v in (m.headers() or [])}
            out.append(rec)
    return out


def test_new_data_is_published_once_and_a_304_publishes_nothing(fake: FakePegelonline, bootstrap: str,
                                                                 tmp_path: Path) -> None:
    fake.add_station(HOLTENAU, "9610001", "uuid-t1")
    fake.rows["uuid-t1"] = rows([600.0, 604.0, 610.0])
    sensor = "kiel:_:sensor:gauge-t1"
    src = Running(fake, bootstrap, tmp_path, f"9610001={sensor}")
    try:
        wait_for(lambda: src.value("plietsch_pegelonline_readings_published_total", station="9610001") == 3, 15, "3 readings")
        wait_for(lambda: src.value("plietsch_pegelonline_not_modified_total", station="9610001") >= 2, 15, "two 304s")
        assert src.value("plietsch_pegelonline_readings_published_total", station="9610001") == 3
        reqs = fake.measurement_requests("uuid-t1")
        assert reqs[0][0]["start"] == "P1D" and "If-None-Match" not in reqs[0][1]
        last = datetime.fromisoformat(fake.rows["uuid-t1"][-1]["timestamp"])
        assert datetime.fromisoformat(reqs[1][0]["start"]) == last + timedelta(seconds=1)  # only what is new
        assert reqs[-1][1].get("If-None-Match", "").startswith('"') and reqs[-1][1].get("If-Modified-Since")
        fake.rows["uuid-t1"].append({"timestamp": (last + timedelta(minutes=1)).isoformat(), "value": 612.5})
        wait_for(lambda: src.value("plietsch_pegelonline_readings_published_total", station="9610001") == 4, 15, "the 4th")
        assert src.value("plietsch_pegelonline_up") == 1 and src.value("plietsch_pegelonline_last_success_timestamp_seconds",
                                                                       station="9610001") > 0
    finally:
        src.stop()
    got = readings(bootstrap, sensor)
    assert sorted(r["level_m"] for r in got) == [0.96, 1.0, 1.06, 1.085]  # (W - MW 504) / 100
    assert len({r["event_id"] for r in got}) == 4 and all(r["event_id"].startswith("pegelonline-gauge-t1-") for r in got)
    assert "PNP -5.00 m NHN" in got[0]["source"] and "MW from PEGELONLINE 504 cm" in got[0]["source"]
    state = json.loads((tmp_path / "pegelonline" / "state.json").read_text())
    assert datetime.fromisoformat(state["stations"]["9610001"]["last"]) == last + timedelta(minutes=1)
    assert any("gauge zero (PNP) -5.00 m NHN" in line for line in src.lines)


def test_failures_are_retried_with_backoff_then_published(fake: FakePegelonline, bootstrap: str, tmp_path: Path) -> None:
    fake.add_station(HOLTENAU, "9610002", "uuid-t2")
    fake.rows["uuid-t2"] = rows([500.0, 520.0])
    fake.failures = [(500, {}), (503, {}), (429, {"Retry-After": "0"})]
    src = Running(fake, bootstrap, tmp_path, "9610002=kiel:_:sensor:gauge-t2")
    try:
        wait_for(lambda: src.value("plietsch_pegelonline_readings_published_total", station="9610002") == 2, 15, "2 readings")
        assert src.value("plietsch_pegelonline_retries_total", cause="http") == 3
        assert src.value("plietsch_pegelonline_failing", station="9610002") == 0
    finally:
        src.stop()
    assert [r["level_m"] for r in readings(bootstrap, "kiel:_:sensor:gauge-t2")] == [-0.04, 0.16]
    assert dead_letters(bootstrap, "9610002") == []  # transient failures are never dead letters
    failing = [line for line in src.lines if "retrying with backoff" in line]
    assert [("HTTP 500" in f, "HTTP 503" in f, "HTTP 429" in f) for f in failing] == [
        (True, False, False), (False, True, False), (False, False, True)]  # once per change of state
    assert any("answering again after 3 failed" in line for line in src.lines)


def test_unreachable_server_and_unknown_station_are_retried_not_fatal(fake: FakePegelonline, tmp_path: Path) -> None:
    settings = PegelSettings(base_url=f"http://127.0.0.1:{free_port()}/v2", stations="9610003=kiel:_:sensor:gauge-t3",
                             backoff_base_s=0.05, backoff_cap_s=2.0)
    src = PegelSource(settings, EventPublisher("127.0.0.1:1", SingleObjectCodec()), tmp_path, report=lambda m: None)
    st = src.stations[0]
    for _ in range(3):
        src.step(st)
    assert st.failures == 3 and st.state.startswith("transient ConnectError")
    assert src.metrics.registry.get_sample_value("plietsch_pegelonline_failing", {"station": "9610003"}) == 1
    lines: list[str] = []
    src2 = PegelSource(settings.model_copy(update={"base_url": fake.url}), EventPublisher("127.0.0.1:1", SingleObjectCodec()),
                       tmp_path, report=lines.append)
    src2.step(src2.stations[0])  # the fake knows no 9610003
    assert src2.stations[0].state.startswith("permanent HTTP 404") and "check the number in PLIETSCH_PEGELONLINE_STATIONS" in lines[0]


def test_a_restart_with_the_state_file_publishes_nothing_again(fake: FakePegelonline, bootstrap: str, tmp_path: Path) -> None:
    fake.add_station(HOLTENAU, "9610004", "uuid-t4")
    fake.rows["uuid-t4"] = rows([505.0, 506.0, 507.0])
    stations = "9610004=kiel:_:sensor:gauge-t4"
    first = Running(fake, bootstrap, tmp_path, stations)
    try:
        wait_for(lambda: first.value("plietsch_pegelonline_readings_published_total", station="9610004") == 3, 15, "3")
    finally:
        first.stop()
    fake.ignore_start = True  # a server that sends everything again: the source itself must drop what it published
    seen = len(fake.measurement_requests("uuid-t4"))
    second = Running(fake, bootstrap, tmp_path, stations)
    try:
        wait_for(lambda: second.value("plietsch_pegelonline_polls_total", station="9610004") >= 3, 15, "three polls")
        assert second.value("plietsch_pegelonline_readings_published_total", station="9610004") == 0
    finally:
        second.stop()
    q, _ = fake.measurement_requests("uuid-t4")[seen]
    assert q["start"] != "P1D"  # asked only for what is after the last published
    assert sorted(r["level_m"] for r in readings(bootstrap, "kiel:_:sensor:gauge-t4")) == [0.01, 0.02, 0.03]


def test_kafka_unreachable_is_retried_and_the_state_waits_for_the_flush(fake: FakePegelonline, paused_broker: EmbeddedBroker,
                                                                        tmp_path: Path) -> None:
    bootstrap, pid = paused_broker.bootstrap_servers, paused_broker._proc.pid  # type: ignore[union-attr]
    fake.add_station(HOLTENAU, "9610010", "uuid-t10")
    fake.rows["uuid-t10"] = rows([504.0])
    state = tmp_path / "pegelonline" / "state.json"
    src = Running(fake, bootstrap, tmp_path, "9610010=kiel:_:sensor:gauge-t10", flush_timeout_s=1.0)
    try:
        wait_for(lambda: src.value("plietsch_pegelonline_readings_published_total", station="9610010") == 1, 15, "1")
        before = state.read_text()
        last = datetime.fromisoformat(fake.rows["uuid-t10"][-1]["timestamp"])
        os.kill(pid, signal.SIGSTOP)  # Kafka stops answering: a transient failure
        try:
            fake.rows["uuid-t10"].append({"timestamp": (last + timedelta(minutes=1)).isoformat(), "value": 514.0})
            wait_for(lambda: src.value("plietsch_pegelonline_retries_total", cause="kafka") >= 1, 30, "a Kafka retry")
            assert state.read_text() == before  # not advanced before the flush succeeded
            assert src.value("plietsch_pegelonline_readings_published_total", station="9610010") == 1
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_for(lambda: src.value("plietsch_pegelonline_readings_published_total", station="9610010") == 2, 60,
                 "the reading after Kafka came back")
        assert json.loads(state.read_text())["stations"]["9610010"]["last"] == fake.rows["uuid-t10"][-1]["timestamp"]
    finally:
        src.stop()
    assert sorted({r["event_id"]: r["level_m"] for r in readings(bootstrap, "kiel:_:sensor:gauge-t10")}.values()) == [0.0, 0.1]
    assert dead_letters(bootstrap, "9610010") == []
    assert any("Kafka: writing the readings to Kafka failed" in line for line in src.lines)


def test_bad_entries_are_dead_letters_with_their_reason(fake: FakePegelonline, bootstrap: str, tmp_path: Path) -> None:
    fake.add_station(HOLTENAU, "9610005", "uuid-t5")
    good = rows([600.0, 601.0])
    t = datetime.fromisoformat(good[-1]["timestamp"])
    fake.rows["uuid-t5"] = [
        *good,
        {"timestamp": (t + timedelta(minutes=1)).replace(tzinfo=None).isoformat(), "value": 602.0},
        {"timestamp": (t + timedelta(minutes=2)).isoformat(), "value": "n/a"},
        {"timestamp": (t + timedelta(minutes=3)).isoformat(), "value": 9999.0},
        {"value": 603.0},
    ]
    src = Running(fake, bootstrap, tmp_path, "9610005=kiel:_:sensor:gauge-t5")
    try:
        wait_for(lambda: src.value("plietsch_pegelonline_polls_total", station="9610005") >= 4, 15, "four polls")
        for reason in ("no_offset", "not_a_number", "out_of_range", "missing"):
            assert src.value("plietsch_pegelonline_dead_letters_total", reason=reason) == 1, reason
        assert src.value("plietsch_pegelonline_readings_published_total", station="9610005") == 2
    finally:
        src.stop()
    dead = {d["error_type"]: d for d in dead_letters(bootstrap, "9610005")}
    assert len(dead_letters(bootstrap, "9610005")) == 4  # once each, though the server sends them on every poll
    assert "has no UTC offset" in dead["no_offset"]["reason"] and "'n/a' is not a number" in dead["not_a_number"]["reason"]
    assert "9999.0" in dead["out_of_range"]["reason"] and "9610005" in dead["missing"]["reason"]
    assert dead["out_of_range"]["_headers"]["error-type"] == "out_of_range" and dead["missing"]["_headers"]["reason"]
    assert json.loads(dead["not_a_number"]["original_value"])["value"] == "n/a"
    assert [r["level_m"] for r in readings(bootstrap, "kiel:_:sensor:gauge-t5")] == [0.96, 0.97]


def test_mw_from_characteristic_values_gives_the_level_of_the_configured_mean(fake: FakePegelonline, bootstrap: str,
                                                                              tmp_path: Path) -> None:
    fake.add_station(HOLTENAU, "9610006", "uuid-t6")  # MW 504 from the characteristic values
    fake.add_station(NO_MW, "9610007", "uuid-t7")  # no MW: the configured 504
    fake.rows["uuid-t6"] = rows([688.0, 694.0])
    fake.rows["uuid-t7"] = rows([688.0, 694.0])
    src = Running(fake, bootstrap, tmp_path, "9610006=kiel:_:sensor:gauge-t6,9610007=kiel:_:sensor:gauge-t7",
                  mean_cm="9610007=504")
    try:
        for n in ("9610006", "9610007"):
            wait_for(lambda n=n: src.value("plietsch_pegelonline_readings_published_total", station=n) == 2, 15, n)
    finally:
        src.stop()
    a, b = readings(bootstrap, "kiel:_:sensor:gauge-t6"), readings(bootstrap, "kiel:_:sensor:gauge-t7")
    assert [r["level_m"] for r in a] == [r["level_m"] for r in b] == [1.84, 1.9]
    assert "MW configured 504 cm" in b[0]["source"] and "MW from PEGELONLINE 504 cm" in a[0]["source"]


def test_a_missing_mean_water_level_is_a_clear_error(fake: FakePegelonline, bootstrap: str, tmp_path: Path) -> None:
    fake.add_station(NO_MW, "9610008", "uuid-t8")
    settings = PegelSettings(base_url=fake.url, stations="9610008=kiel:_:sensor:gauge-t8")
    src = PegelSource(settings, EventPublisher(bootstrap, SingleObjectCodec()), tmp_path, report=lambda m: None)
    with pytest.raises(ConfigError, match=r'no mean water level .* PLIETSCH_PEGELONLINE_MEAN_CM="9610008=504"'):
        src.step(src.stations[0])
    # the command refuses to start with the same message
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, PLIETSCH_DATA_DIR=str(tmp_path),
               PLIETSCH_PEGELONLINE_BASE_URL=fake.url, PLIETSCH_PEGELONLINE_STATIONS="9610008=kiel:_:sensor:gauge-t8",
               PLIETSCH_PEGELONLINE_METRICS_PORT=str(free_port()))
    res = subprocess.run([sys.executable, "-m", "streams.cli", "source", "pegelonline", "--follow"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert "PLIETSCH_PEGELONLINE_MEAN_CM" in res.stderr and "9610008" in res.stderr


def test_the_command_follows_serves_metrics_and_stops_on_sigterm(fake: FakePegelonline, bootstrap: str,
                                                                  tmp_path: Path) -> None:
    fake.add_station(HOLTENAU, "9610009", "uuid-t9")
    fake.rows["uuid-t9"] = rows([510.0])
    port = free_port()
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, PLIETSCH_DATA_DIR=str(tmp_path),
               PLIETSCH_PEGELONLINE_BASE_URL=fake.url, PLIETSCH_PEGELONLINE_STATIONS="9610009=kiel:_:sensor:gauge-t9",
               PLIETSCH_PEGELONLINE_INTERVAL_S="0.2", PLIETSCH_PEGELONLINE_METRICS_PORT=str(port))
    log = (tmp_path / "source.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "source", "pegelonline", "--follow"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)

    def published() -> bool:
        assert proc.poll() is None, (tmp_path / "source.log").read_text()
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return False
        return 'plietsch_pegelonline_readings_published_total{station="9610009"} 1.0' in text and \
            "plietsch_pegelonline_up 1.0" in text

    try:
        wait_for(published, 20, "the reading on /metrics")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
    out = (tmp_path / "source.log").read_text()
    assert code == 0, out
    assert "PEGELONLINE source stopped" in out and "gauge zero (PNP) -5.00 m NHN" in out
    assert [r["level_m"] for r in readings(bootstrap, "kiel:_:sensor:gauge-t9")] == [0.06]
