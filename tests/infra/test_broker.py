import socket

import pytest

from infra.broker import EmbeddedBroker, api_versions_ok, bootstrap_servers


def test_embedded_broker_answers_and_stops() -> None:
    with EmbeddedBroker() as broker:
        host, port = broker.host, broker.port
        assert api_versions_ok(host, port)
    assert not api_versions_ok(host, port, timeout=0.5)
    with socket.socket() as s:  # the port is free again
        s.bind((host, port))


def test_env_names_an_external_cluster() -> None:
    with bootstrap_servers({"KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092,kafka-2:9092"}) as servers:
        assert servers == "kafka-1:9092,kafka-2:9092"


def test_probe_refuses_a_non_kafka_port() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    try:
        assert not api_versions_ok("127.0.0.1", port, timeout=0.3)
    finally:
        srv.close()


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from infra.broker import BrokerError

    monkeypatch.setenv("CALF_TANSU_BIN", "/nonexistent/tansu")
    with pytest.raises(BrokerError, match="CALF_TANSU_BIN"):
        EmbeddedBroker().start()
