"""NGSI-LD subscriptions (ETSI GS CIM 009, 5.8): not built yet."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI

router = APIRouter(tags=["ngsi-ld"])


def attach(app: FastAPI) -> None:
    return None


def document(doc: dict[str, Any]) -> None:
    return None
