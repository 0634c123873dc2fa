"""Issue 11 items 2 and 5 in real Chromium: the viewer's login form and logout with an HttpOnly SameSite=Strict session
cookie; a <script> in an alert message shows as text in the viewer and never reaches the kiosk; the pages run under
their Content-Security-Policy without a single violation or console error."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from api.auth.store import AuthStore
from schemas.codec import SingleObjectCodec
from streams.catalogue import ALERTS
from streams.serde import encode_event
from tests.api.readside import Out
from tests.credentials import OPERATOR
from tests.helpers import Worker
from twin.events import AlertCleared, AlertRaised

pytestmark = [pytest.mark.browser, pytest.mark.broker]
EVIL = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>'
WATCH_CSP = "window.__csp = []; document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(" \
            "`${e.violatedDirective} ${e.blockedURI}`));"


async def _page(browser: Any, headers: dict[str, str] | None = None) -> tuple[Any, Any, list[str]]:
    context = await browser.new_context(viewport={"width": 1100, "height": 750}, extra_http_headers=headers or {})
    await context.add_init_script(WATCH_CSP)
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    return context, page, problems


async def _wait(page: Any, expression: str, timeout_s: float, what: str, problems: list[str]) -> None:
    try:
        await page.wait_for_function(f"() => ({expression})", timeout=timeout_s * 1000)
    except Exception as exc:
        raise AssertionError(f"{what}: not within {timeout_s:.0f} s; problems {problems}") from exc


async def test_login_form_session_cookie_and_logout_under_the_csp(browser: Any, api_url: str, data_dir: Path) -> None:
    name, password = f"lena-{uuid.uuid4().hex[:6]}", secrets.token_urlsafe(16)
    AuthStore(data_dir / "auth.sqlite3").add_user(name, "planner", password)
    context, page, problems = await _page(browser)
    response = await page.goto(f"{api_url}/?view=gaarden")
    assert "'unsafe-eval'" in response.headers["content-security-policy"]  # the Cesium page (measured: Knockout)
    await _wait(page, "!document.getElementById('login').hidden", 30, "the login form", problems)
    assert await page.evaluate("window.plietsch.ready") is False
    await page.fill("#login-name", name)
    await page.fill("#login-password", password + "-wrong")
    await page.click("#login-submit")
    await _wait(page, "document.getElementById('login-error').textContent.includes('falsch')", 20, "the refusal", problems)
    await page.fill("#login-password", password)
    await page.click("#login-submit")
    await _wait(page, "window.plietsch.ready && window.plietsch.live", 90, "the viewer after the login", problems)
    assert await page.inner_text("#user-name") == f"{name} (planner)"
    assert "plietsch_session" not in await page.evaluate("document.cookie")  # HttpOnly: the page's scripts never see it
    cookie = next(c for c in await context.cookies() if c["name"] == "plietsch_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    await page.click("#logout")
    await _wait(page, "document.getElementById('login') && !document.getElementById('login').hidden", 30,
                "the login form after the logout", problems)
    assert not [c for c in await context.cookies() if c["name"] == "plietsch_session"]
    assert await page.evaluate("window.__csp") == []
    # the one wrong password is the only thing the console may report (the browser logs the 401 of /auth/login)
    assert [p for p in problems if "401" not in p] == [], problems
    await context.close()


async def test_a_script_in_an_alert_shows_as_text_in_the_viewer_and_not_at_all_on_the_kiosk(
        browser: Any, api_url: str, worker: Worker) -> None:
    out = Out(worker.bootstrap)
    codec = SingleObjectCodec()
    segment = "kiel:_:coast:gaarden-001"
    aid = f"{segment}:xss-{uuid.uuid4().hex[:6]}"
    at = datetime.now(UTC) + timedelta(days=500)
    out.send(ALERTS.name, aid, encode_event(codec, AlertRaised(
        entity_id=segment, region="kiel", occurred_at=at, source="xss-test", alert_id=aid, severity="severe",
        category="storm_surge", message=f"Gaarden {EVIL}", value=1.2, threshold=1.0, public=True)))
    try:
        context, page, problems = await _page(browser, OPERATOR)
        await page.goto(f"{api_url}/?view=gaarden")
        await _wait(page, "window.plietsch.ready && document.querySelector('#alert-list').textContent.includes('<script>')", 90,
                    "the alert in the viewer's list", problems)
        assert EVIL in await page.inner_text("#alert-list")  # shown as the text it is
        assert await page.evaluate("window.__pwned") is None
        assert await page.locator("#alert-list img, #alert-list script").count() == 0
        assert await page.evaluate("window.__csp") == [] and problems == [], problems
        await context.close()

        context, page, problems = await _page(browser)  # the kiosk: public, no login
        response = await page.goto(f"{api_url}/kiosk?interval=300&refresh=300&lang=en")
        assert "unsafe-eval" not in response.headers["content-security-policy"]
        await _wait(page, "window.kiosk.online && window.kiosk.shown.includes('coast') && "
                          "document.body.innerText.includes('Storm surge warning')", 30, "the coast slide with the alert", problems)
        text = await page.inner_text("body")
        assert "<script" not in text and "pwned" not in text and "<img" not in text  # the free text never reaches it
        assert await page.evaluate("window.__pwned") is None
        assert await page.evaluate("window.__csp") == [] and problems == [], problems
        await context.close()
    finally:
        out.send(ALERTS.name, aid, encode_event(codec, AlertCleared(
            entity_id=segment, region="kiel", occurred_at=at + timedelta(seconds=1), source="xss-test", alert_id=aid,
            category="storm_surge", message="cleared")))
