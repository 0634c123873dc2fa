"""``GET /audit``: who did what (issue 11 item 6), from the archive, newest first; operators only (api/auth/access.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from api.audit import query
from api.deps import SettingsDep
from api.filters import DATE_TIME, parse_range

router = APIRouter(tags=["audit"])
Action = Literal["scenario.launch", "scenario.cancel", "scenario.share", "scenario.delete", "moderate", "user.create",
                 "user.delete", "key.create", "key.delete", "login", "login.failed", "logout"]
DEFAULT_DAYS = 30


@router.get("/audit", operation_id="audit_log", summary="Who launched, cancelled, shared or deleted scenarios, managed "
            "users and keys, logged in or failed to (newest first; default: the last 30 days)",
            responses={422: {"description": "a bad time, range or filter"}})
def audit_log(settings: SettingsDep, start: Annotated[str | None, Query(json_schema_extra=DATE_TIME)] = None,
              end: Annotated[str | None, Query(json_schema_extra=DATE_TIME)] = None, action: Action | None = None,
              actor: Annotated[str | None, Query(max_length=200)] = None,
              target: Annotated[str | None, Query(max_length=300)] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100, offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    now = datetime.now(UTC)
    t0, t1 = parse_range((now - timedelta(days=DEFAULT_DAYS)).isoformat() if start is None else start,
                         now.isoformat() if end is None else end)
    page = query(settings.archive_dir, t0, t1, action=action, actor=actor, target=target, limit=limit, offset=offset)
    return {"total": page.total, "offset": offset, "limit": limit, "start": t0.isoformat(), "end": t1.isoformat(),
            "items": page.items}
