"""Issue 12 with `plietsch run`'s memory-only broker: feedback and its decisions are archived by the real archive sink
and, when the broker starts empty again, replayed from the archive (streams.startup.replay_tail, as `plietsch run`
does), so the receipt, the queue and the public layer of a restarted stack are what they were."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from api.feedback import FeedbackSettings
from api.main import create_app
from api.settings import ApiSettings
from infra.broker import EmbeddedBroker
from streams.archive import read_events, run_sink
from streams.catalogue import FEEDBACK, ensure_topics
from streams.serde import make_codec
from streams.startup import replay_tail
from tests.api.test_roles import Served
from tests.credentials import OPERATOR
from tests.helpers import wait_for
from twin.region import BUNDLED_DIR

pytestmark = pytest.mark.broker


def _app(bootstrap: str, data: Path) -> object:
    app = create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS=bootstrap, region_pack=BUNDLED_DIR / "kiel", data_dir=data))
    app.state.feedback_settings = FeedbackSettings(delay_s=0)
    return app


def test_feedback_survives_a_restart_of_the_memory_only_broker(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    with EmbeddedBroker() as first:
        ensure_topics(first.bootstrap_servers)
        stop = threading.Event()
        sink = threading.Thread(target=lambda: run_sink(first.bootstrap_servers, make_codec(""), root, group="fb-sink",
                                                        flush_every_s=0.5, should_stop=stop.is_set), daemon=True)
        sink.start()
        with Served(_app(first.bootstrap_servers, tmp_path)) as url, httpx.Client(base_url=url, timeout=30) as c:
            body = {"kind": "problem", "category": "coast", "text": "Der Steg am Strand ist kaputt, mein Name ist Ole Jensen",
                    "lon": 10.148, "lat": 54.3148}
            kept = c.post("/feedback", json=body).json()["code"]
            gone = c.post("/feedback", json={**body, "text": "Werbung für meinen Laden"}).json()["code"]
            waiting = c.post("/feedback", json={**body, "text": "Noch nicht entschieden"}).json()["code"]
            assert c.post(f"/feedback/{kept}/moderation", json={"decision": "approved", "reason": "stimmt"},
                          headers=OPERATOR).status_code == 200
            assert c.post(f"/feedback/{gone}/moderation", json={"decision": "rejected", "reason": "Werbung"},
                          headers=OPERATOR).status_code == 200
            wait_for(lambda: sum(1 for t, _ in read_events(root) if t == FEEDBACK.name) >= 5, 60, "the feedback archived")
        stop.set()
        sink.join(60)

    with EmbeddedBroker() as second:  # empty: offsets start at 0 again, nothing of the first broker is left
        ensure_topics(second.bootstrap_servers)
        records, _ = replay_tail(second.bootstrap_servers, root, {}, lambda line: None)
        assert records >= 5
        with Served(_app(second.bootstrap_servers, tmp_path)) as url, httpx.Client(base_url=url, timeout=30) as c:
            assert c.get(f"/feedback/receipt/{kept}").json()["status"] == "published"
            rejected = c.get(f"/feedback/receipt/{gone}").json()
            assert rejected["status"] == "rejected" and rejected["reason"] == "Werbung"
            assert c.get(f"/feedback/receipt/{waiting}").json()["status"] == "pending"
            layer = c.get("/public/feedback").json()["features"]
            assert len(layer) == 1 and "text" not in layer[0]["properties"]  # published, without its free text
            queue = c.get("/feedback/queue", headers=OPERATOR).json()["items"]
            assert [i["code"] for i in queue] == [waiting]
