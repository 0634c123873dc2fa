"""Issue 11 item 7: the Kafka clients of the API, the archive sink, the publishers, readers and the topic setup take
SASL/TLS settings from the environment (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_*); a half-given setup is
refused with what is missing. The configs are checked as built (no broker here speaks SASL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.kafka_security import KafkaSecurity, kafka_security
from streams.consume import consumer_config
from streams.publisher import producer_config

SCRAM = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
         "KAFKA_SASL_USERNAME": "plietsch", "KAFKA_SASL_PASSWORD": "s3cret-from-env"}


@pytest.fixture
def scram(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for k, v in SCRAM.items():
        monkeypatch.setenv(k, v)
    kafka_security.cache_clear()
    yield
    kafka_security.cache_clear()


def test_plaintext_by_default_changes_nothing() -> None:
    assert KafkaSecurity().librdkafka() == {} and KafkaSecurity().aiokafka() == {}


def test_configs_carry_sasl_ssl(scram: None) -> None:
    want = {"security.protocol": "sasl_ssl", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "plietsch",
            "sasl.password": "s3cret-from-env", "ssl.endpoint.identification.algorithm": "https"}
    for cfg in (producer_config("kafka:9094"), consumer_config("kafka:9094")):
        assert want.items() <= cfg.items()
    aio = kafka_security().aiokafka()
    assert aio["security_protocol"] == "SASL_SSL" and aio["sasl_mechanism"] == "SCRAM-SHA-512"
    assert aio["sasl_plain_username"] == "plietsch" and aio["sasl_plain_password"] == "s3cret-from-env"
    assert aio["ssl_context"] is not None
    creds = kafka_security().faust_credentials()
    assert creds.username == "plietsch" and str(creds.mechanism.value) == "SCRAM-SHA-512"
    assert "s3cret" not in repr(kafka_security())  # the password stays out of logs


def test_the_api_and_archive_clients_carry_them(scram: None) -> None:
    import inspect

    import api.main
    import api.readmodel
    import streams.archive
    import streams.catalogue

    # each client the API, the archive sink and the topic setup make goes through the merge
    assert "Producer(secured(" in inspect.getsource(api.main) and "Consumer(secured(" in inspect.getsource(api.readmodel)
    assert "kafka_security().librdkafka()" in inspect.getsource(streams.archive.run_sink)
    assert "kafka_security().librdkafka()" in inspect.getsource(streams.catalogue.ensure_topics)
    from infra.kafka_security import secured

    assert secured({"bootstrap.servers": "kafka:9094"})["security.protocol"] == "sasl_ssl"


def test_half_given_setups_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ValueError, match="KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"):
        KafkaSecurity()
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("KAFKA_SSL_CERTIFICATE_LOCATION", "/certs/me.crt")
    with pytest.raises(ValueError, match="go together"):
        KafkaSecurity()
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.delenv("KAFKA_SSL_CERTIFICATE_LOCATION")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "u")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "p")
    with pytest.raises(ValueError, match="in clear"):
        KafkaSecurity()


def test_the_worker_carries_them(scram: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Faust app (its consumer group) and the transactional tables' clients of the worker."""
    from streams.app import TwinApp
    from streams.settings import StreamSettings
    from streams.tables import TxTables
    from twin.region import BUNDLED_DIR

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9094")
    twin = TwinApp(StreamSettings(region_pack=str(BUNDLED_DIR / "kiel")))
    creds = twin.app.conf.broker_credentials
    assert creds is not None and creds.username == "plietsch"
    seen: list[dict] = []
    monkeypatch.setattr("streams.tables.Consumer", lambda cfg: seen.append(cfg) or (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(RuntimeError):
        TxTables("kafka:9094", "app", "agent", ["t"], 1)._load(0)
    assert seen and seen[0]["sasl.username"] == "plietsch" and seen[0]["security.protocol"] == "sasl_ssl"
