"""Issue 11 item 4, the rest: scenario results expire after PLIETSCH_SCENARIO_RESULT_TTL_H and their disk is capped by
PLIETSCH_SCENARIO_DISK_MB (oldest first); the API shows the expiry and answers 410 Gone, in German and English, naming
the setting. Runs are finished-run records on the real scenario.results topic and real files under the data dir (no
worker: the records' end times are set in the past, so nothing waits for a clock)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from fastapi.testclient import TestClient

from api.auth.store import AuthStore
from api.main import create_app
from api.settings import ApiSettings
from infra.broker import EmbeddedBroker
from streams.catalogue import SCENARIO_RESULTS, ensure_topics
from streams.serde import encode_event, make_codec
from tests.credentials import OPERATOR
from tests.helpers import wait_for
from twin.events import AuditRecorded, ScenarioProgressed
from twin.region import BUNDLED_DIR

pytestmark = pytest.mark.broker
MB = 1024 * 1024


@pytest.fixture(scope="module")
def own_broker() -> Iterator[str]:
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap_servers)
        yield b.bootstrap_servers


def _run(producer: Producer, data: Path, name: str, status: str, ended_h_ago: float, size: int) -> str:
    sid = f"kiel:_:scenario:s-{name}"
    event = ScenarioProgressed(entity_id=sid, region="kiel", occurred_at=datetime.now(UTC) - timedelta(hours=ended_h_ago),
                               source="test", status=status, step=3 if status == "running" else 5, steps=5,  # type: ignore[arg-type]
                               summary_json='{"steps": 5}' if status == "completed" else "")
    producer.produce(SCENARIO_RESULTS.name, key=sid.encode(), value=encode_event(make_codec(""), event))
    out = data / "scenarios" / f"s-{name}"
    (out / "steps").mkdir(parents=True)
    (out / "summary.json").write_text('{"steps": 5}')
    (out / "steps" / "depth_000.tif").write_bytes(b"\0" * size)
    os.utime(out, (event.occurred_at.timestamp(), event.occurred_at.timestamp()))  # written when the run ended
    return sid


def test_results_expire_and_the_disk_is_capped_oldest_first(own_broker: str, tmp_path: Path) -> None:
    producer = Producer({"bootstrap.servers": own_broker})
    runs = {name: _run(producer, tmp_path, name, status, ago, size) for name, status, ago, size in [
        ("ancient", "completed", 72, MB // 10),  # ended more than two TTLs ago: forgotten (record, marker, owner)
        ("old", "completed", 30, MB // 10),  # ended more than a TTL ago: expired
        ("a", "completed", 3, MB), ("b", "failed", 2, MB), ("c", "completed", 1, MB),  # 3 MB, oldest first over the cap
        ("r", "running", 0.5, MB),  # a run still going: counted, never deleted
    ]}
    assert producer.flush(30) == 0
    orphan = tmp_path / "scenarios" / "s-orphan"  # files no record names, from long ago
    orphan.mkdir()
    (orphan / "summary.json").write_text("{}")
    three_days_ago = (datetime.now(UTC) - timedelta(days=3)).timestamp()
    os.utime(orphan, (three_days_ago, three_days_ago))
    store = AuthStore(tmp_path / "auth.sqlite3")
    for name, sid in runs.items():
        store.own_scenario(sid, "env")
        store._db().execute("UPDATE scenario_owners SET created_at = ? WHERE sid = ?",  # asked for when it ran
                            ((tmp_path / "scenarios" / f"s-{name}").stat().st_mtime - 3600, sid))
    app = create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS=own_broker, region_pack=BUNDLED_DIR / "kiel", data_dir=tmp_path,
                                 scenario_result_ttl_h=24, scenario_disk_mb=3.5, scenario_sweep_s=0.2))
    with TestClient(app, headers=OPERATOR) as c:
        def listed() -> dict[str, dict[str, object]]:
            return {r["entity_id"]: r for r in c.get("/scenarios").json()}

        wait_for(lambda: (ls := listed()).get(runs["a"], {}).get("expired") and ls[runs["old"]]["expired"]
                 and runs["ancient"] not in ls, 60, "the sweep to expire and forget results")
        ls = listed()
        assert set(ls) == {runs[n] for n in ("old", "a", "b", "c", "r")}
        assert ls[runs["old"]]["expired"]["reason"] == "ttl" and ls[runs["a"]]["expired"]["reason"] == "disk"
        assert ls[runs["b"]]["expired"] is None and ls[runs["c"]]["expired"] is None and ls[runs["r"]]["expired"] is None
        assert ls[runs["r"]]["expires_at"] is None  # a run going on has no expiry yet
        ends = {n: datetime.fromisoformat(ls[runs[n]]["occurred_at"]) for n in ("b", "c")}  # type: ignore[arg-type]
        assert all(datetime.fromisoformat(ls[runs[n]]["expires_at"]) - ends[n] == timedelta(hours=24) for n in ends)  # type: ignore[arg-type]

        r = c.get(f"/scenarios/{runs['old']}/summary")
        assert r.status_code == 410
        assert "PLIETSCH_SCENARIO_RESULT_TTL_H" in r.json()["detail"] and "abgelaufen" in r.json()["detail"]
        assert "expired" in r.json()["detail"]
        r = c.get(f"/scenarios/{runs['a']}/assets")
        assert r.status_code == 410 and "PLIETSCH_SCENARIO_DISK_MB" in r.json()["detail"] and "3.5 MB" in r.json()["detail"]
        assert c.get(f"/scenarios/{runs['a']}/rasters/max_depth.tif").status_code == 410
        assert c.get(f"/scenarios/{runs['c']}/summary").json() == {"steps": 5}
        detail = c.get(f"/scenarios/{runs['old']}").json()
        assert detail["status"] == "completed" and detail["expired"]["setting"] == "PLIETSCH_SCENARIO_RESULT_TTL_H"
        assert c.get(f"/scenarios/{runs['ancient']}").status_code == 404

        # disk: expired runs keep only their marker, the orphan and the forgotten run are gone, the rest fits the cap
        root = tmp_path / "scenarios"
        assert sorted(p.name for p in root.iterdir()) == ["s-a", "s-b", "s-c", "s-old", "s-r"]
        assert [p.name for p in (root / "s-old").iterdir()] == [p.name for p in (root / "s-a").iterdir()] == ["expired.json"]
        assert sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) <= 3.5 * MB
        # memory: the expired runs' summaries are dropped, the forgotten run's record and owner row are gone
        rm = app.state.read_model
        assert rm.scenarios[runs["old"]]["summary_json"] == "" and rm.scenarios[runs["c"]]["summary_json"]
        assert runs["ancient"] not in rm.scenarios and store.scenario_owner(runs["ancient"]) is None

    # each deletion is audited (issue 11 item 6) on audit.events, by the system
    consumer = Consumer({"bootstrap.servers": own_broker, "group.id": "retention-audit", "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed"})
    consumer.subscribe(["audit.events"])
    codec, deleted = make_codec(""), {}
    try:
        def read() -> bool:
            for msg in consumer.consume(100, 1.0):
                if msg.error() is None:
                    e = AuditRecorded.model_validate(codec.decode(msg.value())[1])
                    deleted[e.target] = (e.action, e.actor, e.detail)
            return len(deleted) >= 2
        wait_for(read, 60, "the audit records of the deletions")
    finally:
        consumer.close()
    assert deleted == {runs["old"]: ("scenario.delete", "system:retention", "older than PLIETSCH_SCENARIO_RESULT_TTL_H"),
                       runs["a"]: ("scenario.delete", "system:retention", "PLIETSCH_SCENARIO_DISK_MB full")}

    # a restart reads the compacted topic again: the forgotten run is not taken in, the expired ones still answer 410
    again = create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS=own_broker, region_pack=BUNDLED_DIR / "kiel", data_dir=tmp_path,
                                   scenario_result_ttl_h=24, scenario_disk_mb=3.5, scenario_sweep_s=0.2))
    with TestClient(again, headers=OPERATOR) as c:
        wait_for(lambda: runs["c"] in again.state.read_model.scenarios, 60, "the read model to load the results")
        assert runs["ancient"] not in again.state.read_model.scenarios
        assert c.get(f"/scenarios/{runs['a']}/summary").status_code == 410
        assert c.get(f"/scenarios/{runs['b']}/summary").status_code == 409  # failed: no results, as before
