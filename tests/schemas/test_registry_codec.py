"""The Confluent wire format path, against a minimal Schema Registry HTTP endpoint (the registry is an external
service; the codec and confluent_kafka.schema_registry client under test are the real ones)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from schemas.codec import CodecError
from streams.serde import RegistryCodec, make_codec


class _Registry(BaseHTTPRequestHandler):
    schemas: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        subject = self.path.split("/")[2]
        if body["schema"] not in self.schemas:
            self.schemas.append(body["schema"])
        sid = self.schemas.index(body["schema"]) + 1
        self._send(200, {"id": sid, "subject": subject, "version": 1, "schema": body["schema"], "schemaType": "AVRO"})

    def do_GET(self) -> None:  # noqa: N802
        parts = self.path.split("?")[0].split("/")
        if parts[1:3] == ["schemas", "ids"]:
            sid = int(parts[3])
            if 1 <= sid <= len(self.schemas):
                return self._send(200, {"schema": self.schemas[sid - 1], "schemaType": "AVRO"})
            return self._send(404, {"error_code": 40403, "message": "Schema not found"})
        self._send(404, {"error_code": 404, "message": "not found"})


@pytest.fixture
def registry_url() -> Iterator[str]:
    _Registry.schemas = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_confluent_wire_format_round_trip(registry_url: str) -> None:
    codec = make_codec(registry_url)
    assert isinstance(codec, RegistryCodec)
    rec = {"event_id": "e1", "entity_id": "kiel:_:sensor:g", "region": "kiel", "occurred_at": "2026-01-01T00:00:00+00:00",
           "source": "t", "level_m": 0.5}
    data = codec.encode("WaterLevelMeasured", rec)
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") == 1
    fresh = make_codec(registry_url)  # another process: knows the schema only by id
    assert fresh.decode(data) == ("WaterLevelMeasured", rec)
    with pytest.raises(CodecError, match="not Confluent wire format"):
        fresh.decode(b"\xc3\x01" + data)
    with pytest.raises(CodecError, match="schema id 99 not found"):
        fresh.decode(b"\x00\x00\x00\x00\x63" + data[5:])
