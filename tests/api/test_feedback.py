"""Issue 12 items 2-4 over a real broker and the real API (uvicorn): feedback becomes a FeedbackSubmitted event with the
personal data removed before it is produced and no address kept; a device is limited by a salted hash; operators
moderate (events, audited); approved feedback is public after the delay (a GeoJSON layer, counts with "<5"), the
receipt tells the visitor; planners filter and export; a restarted API has it all again from the topic."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from api.feedback import DeviceLimit, FeedbackSettings, normalise_code, scrub
from api.main import create_app
from api.settings import ApiSettings
from schemas.codec import SingleObjectCodec
from streams.catalogue import AUDIT, FEEDBACK
from tests.api.test_roles import Served
from tests.credentials import OPERATOR
from tests.helpers import wait_for
from twin.region import BUNDLED_DIR

GAARDEN = (10.148, 54.3148)  # in Gaarden, in the bundled Kiel pack


@pytest.mark.parametrize(("text", "gone", "kept"), [
    ("Hallo, ich bin Jens Petersen und wohne hier. Ruf mich an: 0431 123456", ["Jens", "Petersen", "0431 123456"],
     ["ich bin [Name entfernt] und wohne hier", "[Telefonnummer entfernt]"]),
    ("Mein Name ist Anna Schmidt, Mail: anna.schmidt@example.de", ["Anna", "Schmidt", "example.de"],
     ["Mein Name ist [Name entfernt]", "[E-Mail entfernt]"]),
    ("Ich heiße Ole, Handy 0171/2345678, Festnetz 0049 (0)431-12 34 56", ["Ole", "2345678", "12 34 56"],
     ["Ich heiße [Name entfernt]"]),
    ("Ich bin Anwohnerin in Gaarden und finde den Radweg gefährlich.", [], ["Ich bin Anwohnerin in Gaarden"]),
    ("ich bin froh über die neue Ampel, Baustelle vom 24.11.2026 bis 2027, PLZ 24103", [],
     ["ich bin froh", "24.11.2026 bis 2027", "24103"]),
    ("My name is John Smith, call +49 171 2345678 or john(at)mail.com", ["John", "Smith", "2345678", "mail.com"],
     ["My name is [Name entfernt]"]),
    ("I'm Sarah and I am happy with the bike lanes. I am a cyclist.", ["Sarah"], ["I am happy", "I am a cyclist"]),
    ("Jeg hedder Mette Hansen, ring 12 34 56 78 eller +45 12345678", ["Mette", "Hansen", "12 34 56 78", "12345678"],
     ["Jeg hedder [Name entfernt]"]),
])
def test_personal_data_is_removed_from_german_english_and_danish_text(text: str, gone: list[str], kept: list[str]) -> None:
    clean, n = scrub(text)
    assert [g for g in gone if g in clean] == [], clean
    assert [k for k in kept if k not in clean] == [], clean
    assert (n > 0) == bool(gone)


def test_a_device_is_limited_per_hour_by_a_hash_whose_salt_changes_every_day() -> None:
    limit = DeviceLimit(per_hour=2)
    day1 = datetime(2026, 11, 24, 10, tzinfo=UTC)
    a = limit.device("10.0.0.1", "kiosk browser", now=day1)
    assert "10.0.0.1" not in a and a == limit.device("10.0.0.1", "kiosk browser", now=day1)
    assert a != limit.device("10.0.0.2", "kiosk browser", now=day1)
    assert limit.take(a, now=0) is None and limit.take(a, now=10) is None
    assert limit.take(a, now=20) == 3581  # the third within the hour: wait until the first is an hour old
    assert limit.take(a, now=3601) is None
    b = limit.device("10.0.0.1", "kiosk browser", now=day1 + timedelta(days=1))
    assert b != a  # a new day, a new salt: yesterday's hash cannot be linked to today's
    assert normalise_code("k7q3-m9xp") == "K7Q3M9XP" and normalise_code("K7Q3 M9XO") == "K7Q3M9X0"
    assert normalise_code("nope") is None


def _app(topics: str, data: Path, **feedback: Any) -> Any:
    app = create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS=topics, region_pack=BUNDLED_DIR / "kiel", data_dir=data))
    app.state.feedback_settings = FeedbackSettings(**feedback)
    return app


def _read(topics: str, topic: str) -> list[tuple[bytes, dict[str, Any], str]]:
    """Every record on *topic* (read_committed): raw value, decoded record, record name."""
    c = Consumer({"bootstrap.servers": topics, "group.id": f"t-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False,
                  "isolation.level": "read_committed"})
    _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    c.assign([TopicPartition(topic, 0, 0)])
    out, codec = [], SingleObjectCodec()
    try:
        wait_for(lambda: out.extend([m for m in c.consume(100, 0.5) if not m.error()]) or (out and out[-1].offset() + 1 >= high)
                 or high == 0, 60, f"the records on {topic}")
    finally:
        c.close()
    return [(m.value(), codec.decode(m.value())[1], codec.decode(m.value())[0]) for m in out]


@pytest.mark.broker
def test_feedback_from_submission_to_publication_and_after_a_restart(topics: str, tmp_path: Path) -> None:
    app = _app(topics, tmp_path, delay_s=3, per_device_hour=50)
    with Served(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        # refusals say in German what to change
        r = c.post("/feedback", json={"kind": "idea", "category": "traffic", "text": "Mehr Bänke", "lon": 11.5, "lat": 54.3})
        assert r.status_code == 422 and "außerhalb der Region" in r.json()["detail"], r.text
        r = c.post("/feedback", json={"kind": "wish", "category": "traffic", "text": "Mehr Bänke"})
        assert r.status_code == 422 and "gibt es nicht" in r.json()["detail"]
        r = c.post("/feedback", json={"kind": "rating", "category": "coast"})
        assert r.status_code == 422 and "1 bis 5 Sterne" in r.json()["detail"]
        r = c.post("/feedback", json={"kind": "idea", "category": "planning", "text": "gut so", "scenario_id": "kiel:_:scenario:nope"})
        assert r.status_code == 404 and "nicht bekannt" in r.json()["detail"]  # well-formed, names no scenario
        r = c.post("/feedback", json={"kind": "idea", "category": "planning", "text": "gut so", "scenario_id": "nope"})
        assert r.status_code == 422 and "keine Szenario-Kennung" in r.json()["detail"]

        text = "Ich bin Jens Petersen. Ein Zebrastreifen am Vinetaplatz! Ruf an: 0431 1234567 oder jens@example.org"
        r = c.post("/feedback", json={"kind": "idea", "category": "traffic", "text": text, "lon": GAARDEN[0],
                                      "lat": GAARDEN[1], "channel": "kiosk", "language": "da"})
        assert r.status_code == 201, r.text
        idea = r.json()
        assert idea["removed"] == 3 and "1234567" not in idea["text"] and "Petersen" not in idea["text"]
        assert "Zebrastreifen am Vinetaplatz" in idea["text"] and idea["neighbourhood"] == "gaarden"
        others = [c.post("/feedback", json={"kind": k, "category": cat, "text": t, "rating": s}).json()["code"]
                  for k, cat, t, s in (("problem", "parking", "Parkhaus immer voll", None), ("rating", "coast", "", 4))]
        assert c.get(f"/feedback/receipt/{idea['code']}").json()["status"] == "pending"
        assert c.get(f"/feedback/receipt/{idea['code'].lower().replace('-', '')}").json()["status"] == "pending"
        r = c.get("/feedback/receipt/ZZZZ-ZZZZ")
        assert r.status_code == 404 and "keine Rückmeldung" in r.json()["detail"]

        # the event on the topic: no phone number, no e-mail, no name, no address of the sender
        mine = [(raw, rec) for raw, rec, name in _read(topics, FEEDBACK.name)
                if name == "FeedbackSubmitted" and rec["feedback_id"] == idea["code"].replace("-", "")]
        assert len(mine) == 1
        raw, rec = mine[0]
        for secret in (b"1234567", b"jens@", b"Petersen", b"127.0.0.1"):
            assert secret not in raw
        assert rec["channel"] == "kiosk" and rec["language"] == "da" and rec["redactions"] == 3

        # the public sees nothing yet; the operator sees the queue
        assert c.get("/public/feedback").json()["features"] == []
        assert c.get("/feedback/queue").status_code == 401
        q = c.get("/feedback/queue", headers=OPERATOR).json()
        assert {i["code"] for i in q["items"]} >= {idea["code"], *others}
        assert "1234567" not in str(q)
        r = c.post(f"/feedback/{idea['code']}/moderation", json={"decision": "approved", "reason": "gute Idee"}, headers=OPERATOR)
        assert r.status_code == 200 and r.json()["status"] == "approved", r.text
        r = c.post(f"/feedback/{idea['code']}/moderation", json={"decision": "rejected", "reason": "doch nicht"}, headers=OPERATOR)
        assert r.status_code == 409
        r = c.post(f"/feedback/{others[0]}/moderation", json={"decision": "rejected", "reason": "Werbung"}, headers=OPERATOR)
        assert r.status_code == 200
        c.post(f"/feedback/{others[1]}/moderation", json={"decision": "approved", "reason": "ok"}, headers=OPERATOR)
        trees = [c.post("/feedback", json={"kind": "idea", "category": "environment", "text": f"Baum Nummer {n}",
                                           "lon": GAARDEN[0], "lat": GAARDEN[1]}).json()["code"] for n in range(5)]
        for code in trees:
            c.post(f"/feedback/{code}/moderation", json={"decision": "approved", "reason": "ok"}, headers=OPERATOR)
        assert c.post(f"/feedback/{others[1]}/moderation", json={"decision": "approved", "reason": "ok"}).status_code == 401

        # after the delay: on the public map and in the counts; the receipt says published; rejected stays hidden
        wait_for(lambda: all(c.get(f"/feedback/receipt/{code}").json()["status"] == "published" for code in [idea["code"], *trees]),
                 60, "the publication", every=1.0)  # 7 lookups a round: well under the public rate limit
        layer = c.get("/public/feedback").json()
        # no free text on the public layer (moderated or not), no receipt code, the day of publication only
        feature = next(f for f in layer["features"] if f["properties"]["category"] == "traffic")
        assert feature["geometry"]["coordinates"] == list(GAARDEN)
        assert set(feature["properties"]) == {"kind", "category", "rating", "neighbourhood", "published_on"}
        assert "Parkhaus" not in str(layer)
        counts = c.get("/public/feedback/counts").json()
        # under 5 (none at all included) is "<5"; five approved tree ideas in Gaarden are counted
        assert counts["categories"]["traffic"] == "<5" and counts["categories"]["parking"] == "<5"
        gaarden = next(h for h in counts["neighbourhoods"] if h["id"] == "gaarden")
        assert isinstance(counts["categories"]["environment"], int) and counts["categories"]["environment"] >= 5
        assert gaarden["name"] == "Gaarden" and gaarden["categories"]["environment"] >= 5
        rejected = c.get(f"/feedback/receipt/{others[0]}").json()
        assert rejected["status"] == "rejected" and rejected["reason"] == "Werbung"

        # planners: approved feedback, filtered, as GeoJSON and CSV
        assert c.get("/feedback").status_code == 401
        pins = c.get("/feedback", params={"category": "traffic"}, headers=OPERATOR).json()
        assert idea["code"] in [f["properties"]["code"] for f in pins["features"]]
        assert {f["properties"]["category"] for f in pins["features"]} == {"traffic"}
        export = c.get("/feedback", params={"format": "csv"}, headers=OPERATOR)
        assert export.headers["content-type"].startswith("text/csv") and "attachment" in export.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(export.text)))
        codes = {r["code"] for r in rows}  # the session's broker may hold other tests' feedback too
        assert codes >= {idea["code"], others[1], *trees} and others[0] not in codes and "1234567" not in export.text
        assert {r["status"] for r in rows} <= {"approved", "published"}
        svg = c.get("/public/qr.svg", params={"lang": "da"})
        assert svg.headers["content-type"].startswith("image/svg+xml") and svg.text.startswith("<svg")
        assert svg.headers["x-qr-target"].endswith("/kiosk?phone=1&lang=da")

    # each decision names its operator: it is its own audit entry (one record, tests/api/test_audit.py reads it back
    # through GET /audit), so nothing about it goes to the audit topic apart from it
    decided = {rec["feedback_id"]: rec for _, rec, name in _read(topics, FEEDBACK.name) if name == "FeedbackModerated"}
    moderated = [code.replace("-", "") for code in (idea["code"], others[0], others[1])]
    assert set(moderated) <= set(decided) and {decided[code]["moderator"] for code in moderated} == {"key:env"}
    assert not [rec for _, rec, _ in _read(topics, AUDIT.name) if rec["action"] == "moderate"]

    # a restarted API reads it all back from the topic; a device meets its limit (a German 429)
    with Served(_app(topics, tmp_path, delay_s=3, per_device_hour=2)) as url, httpx.Client(base_url=url, timeout=30) as c:
        assert c.get(f"/feedback/receipt/{idea['code']}").json()["status"] == "published"
        assert c.get(f"/feedback/receipt/{others[0]}").json()["status"] == "rejected"
        assert any(f["properties"]["category"] == "traffic" for f in c.get("/public/feedback").json()["features"])
        body = {"kind": "idea", "category": "other", "text": "Noch eine Idee"}
        assert [c.post("/feedback", json=body, headers={"User-Agent": "kiosk-a"}).status_code for _ in range(3)] == [201, 201, 429]
        r = c.post("/feedback", json=body, headers={"User-Agent": "kiosk-a"})
        assert r.status_code == 429 and "Von diesem Gerät" in r.json()["detail"] and int(r.headers["retry-after"]) > 0
        assert c.post("/feedback", json=body, headers={"User-Agent": "phone-b"}).status_code == 201


def test_health_is_503_with_the_reason_when_the_feedback_store_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A feedback store whose reader ends on an error it cannot skip makes /health 503 and says why (issue 15 item 3);
    before it stops, /health is 200."""
    from confluent_kafka import Producer
    from fastapi.testclient import TestClient

    from api.feedback_store import FeedbackStore
    from infra.broker import EmbeddedBroker
    from streams.catalogue import ensure_topics

    def broken(self: FeedbackStore, value: bytes | None) -> None:
        raise RuntimeError("the disk under the store is gone")

    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap_servers)
        monkeypatch.setattr(FeedbackStore, "_apply", broken)
        with TestClient(_app(broker.bootstrap_servers, tmp_path)) as c:
            wait_for(lambda: c.get("/health").json()["status"] == "ok", 60, "the API to be ready")
            p = Producer({"bootstrap.servers": broker.bootstrap_servers})
            p.produce(FEEDBACK.name, b"anything")
            assert p.flush(10) == 0
            wait_for(lambda: c.get("/health").status_code == 503, 30, "/health to say the store stopped")
            body = c.get("/health").json()
            assert body["status"] == "degraded" and "feedback store stopped" in body["reason"]
            assert "the disk under the store is gone" in body["reason"]
