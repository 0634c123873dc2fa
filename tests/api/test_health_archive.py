"""Issue 15 item 1's counts where operators look: the records the archive sink skipped as invalid (the worker
dead-letters them; history never sees them) on /health and /metrics, read from the archive's manifest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import ApiSettings
from infra.broker import EmbeddedBroker
from streams.catalogue import ensure_topics
from streams.history.store import Manifest
from tests.credentials import OPERATOR
from twin.region import BUNDLED_DIR

pytestmark = pytest.mark.broker


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap_servers)
        yield b


def test_health_and_metrics_count_what_the_archive_sink_skipped(broker: EmbeddedBroker, tmp_path: Path) -> None:
    settings = ApiSettings(KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, region_pack=BUNDLED_DIR / "kiel",
                           data_dir=tmp_path)
    app = create_app(settings)
    with TestClient(app) as c:
        first = c.get("/health", headers=OPERATOR).json()
        assert first["archive"] == {"invalid_skipped": 0, "events": 0}
        m = Manifest.load(settings.archive_dir)  # as the sink commits it after skipping three records
        m.invalid_skipped = 3
        m.save()
        assert c.get("/health", headers=OPERATOR).json()["archive"] == {"invalid_skipped": 3, "events": 0}
        assert "archive" not in c.get("/health").json()  # the public sees status and reason only
        text = c.get("/metrics", headers=OPERATOR).text
        assert "plietsch_archive_invalid_skipped_total 3.0" in text and "plietsch_archive_events 0.0" in text
        (settings.archive_dir / "_manifest.json").write_text("{not json")
        assert "unreadable" in c.get("/health", headers=OPERATOR).json()["archive"]["error"]
        assert "plietsch_archive_invalid_skipped" not in c.get("/metrics", headers=OPERATOR).text
