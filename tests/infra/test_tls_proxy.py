"""Issue 11 item 7, run for real without Docker: Debian's Caddy with the project's own ``infra/Caddyfile``
(``PLIETSCH_TLS=internal``: Caddy's local CA instead of Let's Encrypt; port, upstream and admin endpoint on free ports)
in front of the API started with the compose file's own command line and API environment (loopback only,
``--proxy-headers``, secure cookies). Over HTTPS with HTTP/2: the API answers through Caddy with HSTS and its security
headers, an operator creates a user and the user's login sets a session cookie that is Secure, HttpOnly and
SameSite=Strict; plain HTTP on the TLS port gets no page. What stays unrun here is the rest of the compose stack:
Apache Kafka with SASL_SSL/SCRAM needs Docker (tests/infra/test_compose.py checks that file as written)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from infra.broker import free_port
from tests.credentials import OPERATOR
from tests.helpers import ROOT, wait_for

pytestmark = pytest.mark.broker

INFRA = ROOT / "infra"


def _caddy() -> str:
    found = shutil.which("caddy")
    if found is None:
        pytest.fail("Caddy is missing: run 'make system-deps' (as root it installs Debian's caddy; else "
                    "'sudo apt-get install caddy'); this test runs infra/Caddyfile in front of the API")
    return found


@pytest.fixture(scope="module")
def proxied(topics: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(the HTTPS base URL, Caddy's local root certificate) with the API behind Caddy."""
    tmp = tmp_path_factory.mktemp("tls")
    api = yaml.safe_load((INFRA / "docker-compose.yml").read_text())["services"]["api"]
    api_port, https_port = free_port(), free_port()
    command = [str(api_port) if part == "8000" else str(part) for part in api["command"]]
    assert command[0] == "uvicorn" and str(api_port) in command, command
    compose_env = {k: str(v) for k, v in api["environment"].items() if k.startswith("PLIETSCH_") and "${" not in str(v)}
    assert compose_env.get("PLIETSCH_COOKIE_SECURE") == "true", compose_env
    env = {**os.environ, **compose_env, "KAFKA_BOOTSTRAP_SERVERS": topics, "PLIETSCH_DATA_DIR": str(tmp / "data")}
    with (tmp / "api.log").open("wb") as log:  # the child keeps its own copy of the handle
        procs = [subprocess.Popen([sys.executable, "-m", *command], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)]
    caddy_env = dict(os.environ, HOME=str(tmp), XDG_DATA_HOME=str(tmp / "xdg-data"),
                     XDG_CONFIG_HOME=str(tmp / "xdg-config"), PLIETSCH_DOMAIN="localhost", PLIETSCH_TLS="internal",
                     PLIETSCH_HTTPS_PORT=str(https_port), PLIETSCH_API_UPSTREAM=f"127.0.0.1:{api_port}",
                     PLIETSCH_CADDY_ADMIN=f"localhost:{free_port()}")
    with (tmp / "caddy.log").open("wb") as log:
        procs.append(subprocess.Popen([_caddy(), "run", "--config", str(INFRA / "Caddyfile"), "--adapter", "caddyfile"],
                                      cwd=tmp, env=caddy_env, stdout=log, stderr=subprocess.STDOUT))
    root = tmp / "xdg-data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
    url = f"https://localhost:{https_port}"

    def up() -> bool:
        if not root.exists():
            return False
        try:
            return httpx.get(f"{url}/health", verify=str(root), timeout=5).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 90, f"the API through Caddy\nAPI: {(tmp / 'api.log').read_text()[-1500:]}\n"
                         f"Caddy: {(tmp / 'caddy.log').read_text()[-1500:]}")
        yield url, root
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)


def test_the_api_answers_through_caddy_over_https_with_hsts(proxied: tuple[str, Path]) -> None:
    url, root = proxied
    with httpx.Client(verify=str(root), http2=True, timeout=10) as client:
        r = client.get(f"{url}/public/summary")
        assert r.status_code == 200, r.text
        assert r.http_version == "HTTP/2"  # Caddy's h2 towards the browser, h1 to the API on the loopback
        assert r.headers["server"] == "Caddy"
        assert r.headers["strict-transport-security"].startswith("max-age=31536000")  # PLIETSCH_COOKIE_SECURE
        assert "default-src" in r.headers["content-security-policy"] and r.headers["x-content-type-options"] == "nosniff"


def test_a_login_over_https_sets_a_secure_httponly_strict_session_cookie(proxied: tuple[str, Path]) -> None:
    url, root = proxied
    with httpx.Client(verify=str(root), timeout=10) as client:
        r = client.post(f"{url}/auth/users", json={"name": "tls-ines", "role": "planner"}, headers=OPERATOR)
        assert r.status_code == 201, r.text
        r = client.post(f"{url}/auth/login", json={"name": "tls-ines", "password": r.json()["password"]})
        assert r.status_code == 200, r.text
        cookie = r.headers["set-cookie"]
        assert "plietsch_session=" in cookie and "Secure" in cookie and "HttpOnly" in cookie, cookie
        assert "SameSite=strict" in cookie, cookie
        assert client.get(f"{url}/auth/me").json() == {"name": "tls-ines", "role": "planner"}


def test_plain_http_on_the_tls_port_gets_no_page(proxied: tuple[str, Path]) -> None:
    url, _ = proxied
    try:
        r = httpx.get(url.replace("https://", "http://") + "/public/summary", timeout=5)
    except httpx.HTTPError:
        return  # refused or cut off: no page either way
    assert r.status_code == 400 and "summary" not in r.text, (r.status_code, r.text[:200])
