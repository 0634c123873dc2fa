"""Issue 11 item 2: login. OIDC bearer tokens against a real token issuer of the test's own (RSA keys generated here,
discovery document and JWKS served over HTTP), local users with argon2id passwords and a server-side session in an
HttpOnly SameSite=Strict cookie, API keys stored hashed, and the first operator of a fresh install."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import RSAKey

from api.auth.store import AuthStore
from api.main import create_app
from api.settings import ApiSettings
from tests.credentials import OPERATOR
from twin.region import BUNDLED_DIR

pytestmark = pytest.mark.broker
AUDIENCE = "plietsch-api"


class Issuer:
    """A token issuer over HTTP: /.well-known/openid-configuration and /jwks, keys made here."""

    def __init__(self) -> None:
        self.keys = [RSAKey.generate_key(2048, parameters={"kid": "k1"})]
        self.fetches: list[str] = []
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = self.path.removeprefix("/realms/kiel")
                issuer.fetches.append(path)
                if path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks"}
                elif path == "/jwks":
                    body = {"keys": [k.as_dict(private=False) for k in issuer.keys]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/realms/kiel"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, roles: list[str] | None = None, key: RSAKey | None = None, **claims: Any) -> str:
        key = key or self.keys[0]
        now = int(time.time())
        body = {"iss": self.url, "aud": AUDIENCE, "sub": "u-1", "preferred_username": "anna", "iat": now, "exp": now + 300,
                "realm_access": {"roles": ["offline_access", *(roles if roles is not None else ["planner"])]}, **claims}
        return jwt.encode({"alg": "RS256", "kid": key.kid}, body, key)


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    i = Issuer()
    yield i
    i.server.shutdown()


@pytest.fixture
def client(topics: str, issuer: Issuer, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS=topics, region_pack=BUNDLED_DIR / "kiel", data_dir=tmp_path,
                                 oidc_issuer=issuer.url, oidc_audience=AUDIENCE))
    yield TestClient(app)  # no lifespan: these tests need the routes' rules, not the read model


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_oidc_tokens_valid_expired_wrongly_signed_wrong_audience(client: TestClient, issuer: Issuer) -> None:
    assert client.get("/auth/me", headers=bearer(issuer.token())).json() == {"name": "anna", "role": "planner"}
    assert client.get("/regions", headers=bearer(issuer.token())).status_code == 200
    assert client.get("/auth/users", headers=bearer(issuer.token())).status_code == 403
    assert client.get("/auth/users", headers=bearer(issuer.token(["operator"]))).status_code == 200
    now = int(time.time())
    refused = {
        "expired": issuer.token(exp=now - 120, iat=now - 600),
        "wrongly signed": issuer.token(key=RSAKey.generate_key(2048, parameters={"kid": "k1"})),
        "wrong audience": issuer.token(aud="someone-else"),
        "wrong issuer": issuer.token(iss="http://127.0.0.1:1/realms/evil"),
        "no role": issuer.token(roles=[]),
        "not a JWT": "a.b.c",
    }
    for what, token in refused.items():
        r = client.get("/regions", headers=bearer(token))
        assert r.status_code == 401, (what, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
    assert "exp" in client.get("/regions", headers=bearer(refused["expired"])).json()["detail"]
    assert "aud" in client.get("/regions", headers=bearer(refused["wrong audience"])).json()["detail"]
    assert "signature" in client.get("/regions", headers=bearer(refused["wrongly signed"])).json()["detail"]


def test_oidc_key_rotation_is_followed_but_unknown_keys_cannot_flood_the_issuer(client: TestClient, issuer: Issuer) -> None:
    assert client.get("/regions", headers=bearer(issuer.token())).status_code == 200  # keys read
    new = RSAKey.generate_key(2048, parameters={"kid": "k2"})
    issuer.keys.append(new)
    try:
        issuer.fetches.clear()
        for _ in range(5):  # an unknown key id right after a fetch: no new fetch (at most one per refetch_after_s)
            assert client.get("/regions", headers=bearer(issuer.token(key=new))).status_code == 401
        assert issuer.fetches == []
        client.app.state.oidc.refetch_after_s = 0.0  # type: ignore[attr-defined]  # as if that time had passed
        assert client.get("/regions", headers=bearer(issuer.token(key=new))).status_code == 200
        assert issuer.fetches == ["/jwks"]
    finally:
        issuer.keys.remove(new)


def test_local_login_session_cookie_and_logout(client: TestClient, tmp_path: Path) -> None:
    r = client.post("/auth/users", json={"name": "ines", "role": "planner"}, headers=OPERATOR)
    assert r.status_code == 201
    password = r.json()["password"]
    assert len(password) >= 12
    assert client.post("/auth/login", json={"name": "ines", "password": password + "x"}).status_code == 401
    assert client.post("/auth/login", json={"name": "nobody", "password": password}).status_code == 401
    r = client.post("/auth/login", json={"name": "ines", "password": password})
    assert r.status_code == 200 and r.json() == {"name": "ines", "role": "planner"}
    cookie = r.headers["set-cookie"]
    assert "plietsch_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    sid = client.cookies["plietsch_session"]
    assert client.get("/auth/me").json() == {"name": "ines", "role": "planner"}
    assert client.get("/regions").status_code == 200 and client.get("/auth/keys").status_code == 403
    db = sqlite3.connect(tmp_path / "auth.sqlite3")
    assert db.execute("SELECT pw_hash FROM users WHERE name='ines'").fetchone()[0].startswith("$argon2id$")
    assert sid.encode() not in (tmp_path / "auth.sqlite3").read_bytes()  # the session id is kept hashed only
    assert client.post("/auth/logout").status_code == 200
    assert "plietsch_session" not in client.cookies
    client.cookies.set("plietsch_session", sid)  # the old cookie replayed: the session is gone on the server
    assert client.get("/auth/me").json()["role"] == "public" and client.get("/regions").status_code == 401


def test_api_keys_are_shown_once_stored_hashed_and_revocable(client: TestClient, tmp_path: Path) -> None:
    r = client.post("/auth/keys", json={"name": "dashboard", "role": "planner"}, headers=OPERATOR)
    assert r.status_code == 201
    key, kid = r.json()["key"], r.json()["id"]
    assert key.encode() not in (tmp_path / "auth.sqlite3").read_bytes()
    listed = client.get("/auth/keys", headers=OPERATOR).json()
    assert any(k["id"] == kid and k["role"] == "planner" for k in listed) and "key" not in json.dumps(listed).replace('"key:', "")
    assert client.get("/regions", headers=bearer(key)).status_code == 200
    assert client.get("/metrics", headers=bearer(key)).status_code == 403
    assert client.delete(f"/auth/keys/{kid}", headers=OPERATOR).status_code == 204
    r = client.get("/regions", headers=bearer(key))
    assert r.status_code == 401 and "unknown or was deleted" in r.json()["detail"]


def test_first_start_creates_one_operator_and_says_how_to_log_in(topics: str, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    settings = ApiSettings(KAFKA_BOOTSTRAP_SERVERS=topics, region_pack=BUNDLED_DIR / "kiel", data_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="plietsch.api"):
        app = create_app(settings)
    lines = [r.getMessage() for r in caplog.records if "one-time password" in r.getMessage()]
    assert len(lines) == 1
    password = lines[0].split("one-time password ")[1].split(";")[0]
    c = TestClient(app)
    assert c.post("/auth/login", json={"name": "operator", "password": password}).json()["role"] == "operator"
    assert c.get("/auth/users").status_code == 200
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="plietsch.api"):
        create_app(settings)  # a second start (or a second API process): no new operator, no password in the log
    assert not [r for r in caplog.records if "one-time password" in r.getMessage()]
    store = AuthStore(tmp_path / "auth.sqlite3")
    assert store.delete_user("operator")
    store.add_user("operator", "planner")  # no operator left, and a planner holds the name: never promoted
    assert (made := store.ensure_first_operator()) is not None and made[0].startswith("operator-")
    assert {u["name"]: u["role"] for u in store.users()} == {"operator": "planner", made[0]: "operator"}
