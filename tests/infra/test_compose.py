"""Issue 11 item 7, checked without Docker: the compose file (parsed with PyYAML) publishes nothing but HTTPS, every
listener a service reaches Kafka on is SASL_SSL with SCRAM, plaintext only on a container's loopback, and every
secret comes from the environment (infra/.env from .env.example, ignored by git and by the image build)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
ROOT = INFRA.parent
SECRET = re.compile(r"PASSWORD|SECRET|API_KEY|TOKEN|CLUSTER_ID", re.I)
FROM_ENV = re.compile(r"^\$\{([A-Z0-9_]+)(:\?[^}]*)?\}$")


def _compose() -> dict[str, Any]:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_only_https_is_published_and_it_is_caddy_terminating_tls() -> None:
    services = _compose()["services"]
    published = {name: s.get("ports", []) for name, s in services.items() if s.get("ports")}
    assert published == {"api": ["443:443"]}, published
    caddy = [n for n, s in services.items() if str(s.get("image", "")).startswith("caddy")]
    assert caddy and services[caddy[0]]["network_mode"] == "service:api"  # Caddy answers on the api's published 443
    caddyfile = (INFRA / "Caddyfile").read_text()
    # the port and the upstream default to the compose values; only the TLS proxy test sets them
    assert re.search(r"^\{\$PLIETSCH_DOMAIN\}:\{\$PLIETSCH_HTTPS_PORT:443\} \{", caddyfile, re.M)
    assert "tls {$PLIETSCH_TLS}" in caddyfile and "reverse_proxy {$PLIETSCH_API_UPSTREAM:127.0.0.1:8000}" in caddyfile
    assert not {"PLIETSCH_HTTPS_PORT", "PLIETSCH_API_UPSTREAM", "PLIETSCH_CADDY_ADMIN"} & set(_env(services[caddy[0]]))
    command = services["api"]["command"]
    assert command[command.index("--host") + 1] == "127.0.0.1"  # the API itself only on the loopback
    for name, s in services.items():
        cmd = " ".join(map(str, s.get("command") or []))
        assert "0.0.0.0" not in cmd and "0.0.0.0" not in " ".join(_env(s).values()), name


def test_kafka_listeners_are_sasl_ssl_and_plaintext_only_on_loopback() -> None:
    start = (INFRA / "kafka" / "start.sh").read_text()
    props = dict(line.split("=", 1) for line in start.splitlines() if re.match(r"^[a-z][a-z0-9._-]+=", line))
    protocols = dict(pair.split(":") for pair in props["listener.security.protocol.map"].split(","))
    for listener in props["listeners"].split(","):
        name, _, addr = listener.partition("://")
        host = addr.rsplit(":", 1)[0]
        if protocols[name] != "SASL_SSL":
            assert host in ("127.0.0.1", "localhost"), f"{listener} is {protocols[name]} beyond the loopback"
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512" and props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert props["ssl.endpoint.identification.algorithm"] == "https"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert all(p.startswith("SASL_SSL://") for p in props["advertised.listeners"].split(","))
    assert "--add-scram" in start and "${KAFKA_CLIENT_PASSWORD}" in start  # SCRAM users made from the environment
    kafka = _compose()["services"]["kafka"]
    assert "ports" not in kafka


def test_every_kafka_client_uses_sasl_ssl_scram() -> None:
    services = _compose()["services"]
    clients = [n for n, s in services.items() if "KAFKA_BOOTSTRAP_SERVERS" in _env(s)]
    assert set(clients) >= {"topics", "worker", "archive", "simulator", "api"}
    for name in clients:
        env = _env(services[name])
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9094", name
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512", name
        assert env["KAFKA_SSL_CA_LOCATION"] and env["KAFKA_SASL_USERNAME"], name
    assert "SCHEMA_REGISTRY_URL" not in str(services)  # no plain-HTTP registry in this deployment


def test_secrets_only_from_the_environment_and_never_committed() -> None:
    services = _compose()["services"]
    referenced: set[str] = set()
    for name, s in services.items():
        for key, value in _env(s).items():
            if SECRET.search(key):
                m = FROM_ENV.match(value)
                assert m, f"{name}: {key} is not taken from the environment: {value!r}"
                referenced.add(m.group(1))
        referenced |= set(re.findall(r"\$\{([A-Z0-9_]+)", yaml.safe_dump(s)))
    example = dict(line.split("=", 1) for line in (INFRA / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert referenced <= set(example), f"not in .env.example: {referenced - set(example)}"
    assert all(not example[k] for k in example if SECRET.search(k)), "the example holds a secret value"
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "infra/.env" in ignored and "infra/certs/" in ignored
    assert {"infra/.env", "infra/certs/", ".env"} <= set((ROOT / ".dockerignore").read_text().splitlines())


def _spec_errors(doc: dict[str, Any]) -> list[str]:
    import json

    import jsonschema

    schema = json.loads((ROOT / "tests" / "fixtures" / "compose-spec" / "compose-spec.json").read_text())
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]


def test_the_compose_file_follows_the_compose_specification() -> None:
    """Checked against the Compose Specification's own JSON Schema (vendored, Apache-2.0): a misspelt key or a value of
    the wrong type fails here, where no Docker engine can run the file."""
    assert _spec_errors(_compose()) == []
    broken = _compose()
    name, service = next(iter(broken["services"].items()))
    service["enviroment"] = service.pop("environment", {})  # the schema catches what PyYAML cannot
    service["restart"] = ["always"]
    errors = _spec_errors(broken)
    assert any("enviroment" in e for e in errors) and any(e.startswith(f"services/{name}/restart") for e in errors), errors
