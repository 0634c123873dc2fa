"""The public real-time departure board of a bus stop (issue 13 item 3), as the region's bus stop displays show it.

The board is the stop entity the GTFS source writes into the twin (``streams/sources/gtfs``: the schedule with the
delays of GTFS-Realtime TripUpdates); this route only picks the departures still to come at the time of the request.
No personal data: routes, destinations and times only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field

from api.deps import PackDep, ReadModelDep
from streams.sources.gtfs.realtime import entity_name
from twin.ids import EntityId, EntityKind

router = APIRouter(tags=["transit"])
STOP_ID = r"^[A-Za-z0-9:._ -]{1,128}$"


class Departure(BaseModel):
    trip_id: str = Field(description="Fahrt-ID aus dem GTFS-Fahrplan (trips.txt)")
    route: str = Field(description="Linie, wie sie am Bus steht (route_short_name), z. B. '11'")
    headsign: str = Field(description="Fahrtziel (trip_headsign)")
    scheduled: datetime = Field(description="Abfahrt laut Fahrplan, RFC 3339 mit Zeitzone")
    estimated: datetime | None = Field(description="Voraussichtliche Abfahrt laut Echtzeitdaten (GTFS-Realtime); null, "
                                                   "wenn für diese Fahrt keine Echtzeitdaten vorliegen")
    delay_s: int | None = Field(description="Verspätung in Sekunden (negativ: zu früh); null ohne Echtzeitdaten")
    realtime: bool = Field(description="true, wenn die Zeit aus Echtzeitdaten stammt")
    cancelled: bool = Field(description="true, wenn die Fahrt ausfällt oder diese Haltestelle ausgelassen wird")


class Board(BaseModel):
    stop_id: str = Field(description="Haltestellen-ID aus dem GTFS-Fahrplan (stops.txt)")
    entity_id: str = Field(description="Die Haltestelle im Zwilling, '<Region>:<Stadtteil oder _>:stop:<Name>'")
    name: str = Field(description="Name der Haltestelle")
    lat: float = Field(description="Breitengrad, WGS84")
    lon: float = Field(description="Längengrad, WGS84")
    board_at: datetime = Field(description="Wann die Quelle die Tafel zuletzt berechnet hat")
    now: datetime = Field(description="Zeitpunkt dieser Antwort; gezeigt werden Abfahrten ab jetzt")
    source: str = Field(description="Herkunft der Daten (GTFS-Fahrplan); 'SYNTHETIC' im Namen heißt: erfundene Testdaten")
    synthetic: bool = Field(description="true bei erfundenen Testdaten (SYNTHETIC), nicht dem echten Fahrplan")
    departures: list[Departure] = Field(description="Die nächsten Abfahrten, früheste zuerst")


def find_stop(pack: Any, rm: Any, stop_id: str) -> dict[str, Any] | None:
    """The stop entity's record: its scope is the stop's neighbourhood or '_' (streams.sources.gtfs.source)."""
    name = entity_name(stop_id)
    for scope in ("_", *(EntityId.parse(n).name for n in pack.neighbourhoods)):
        rec = rm.get(str(EntityId.of(pack.id, scope, EntityKind.STOP, name)))
        if rec is not None:
            return rec  # type: ignore[no-any-return]
    return None


@router.get("/stops/{stop_id}/departures", operation_id="stop_departures", response_model=Board,
            summary="Abfahrtstafel einer Haltestelle in Echtzeit (Fahrplan und Verspätungen)",
            responses={404: {"description": "Keine Abfahrtstafel für diese Haltestelle: unbekannte stop_id, oder die "
                                            "GTFS-Quelle läuft nicht (PLIETSCH_GTFS_STATIC)"}})
def departures(pack: PackDep, rm: ReadModelDep,
               stop_id: Annotated[str, Path(pattern=STOP_ID, description="Haltestellen-ID aus stops.txt des "
                                                                          "GTFS-Fahrplans, z. B. 'kiel-hbf'")],
               limit: Annotated[int, Query(ge=1, le=30, description="höchstens so viele Abfahrten")] = 10) -> Board:
    """Die nächsten Abfahrten an einer Haltestelle: Linie, Ziel, Abfahrt laut Fahrplan, voraussichtliche Abfahrt und
    Verspätung aus GTFS-Realtime, ausfallende Fahrten markiert. Abfahrten, die schon vorbei sind, fehlen."""
    rec = find_stop(pack, rm, stop_id)
    if rec is None:
        raise HTTPException(404, f"keine Abfahrtstafel für Haltestelle {stop_id!r}: unbekannte stop_id (siehe stops.txt "
                                 "des Fahrplans) oder die GTFS-Quelle läuft nicht")
    state, now = rec["state"], datetime.now(UTC)
    deps = []
    for d in state.get("departures", []):
        at = datetime.fromisoformat(d["estimated"] or d["scheduled"])
        if at >= now:
            deps.append(Departure.model_validate(d))
    source = str(state.get("source", ""))
    return Board(stop_id=state["stop_id"], entity_id=rec["entity_id"], name=state["name"], lat=state["lat"],
                 lon=state["lon"], board_at=state["board_at"], now=now, source=source,
                 synthetic=bool(state.get("synthetic")) or "SYNTHETIC" in state["name"].upper(), departures=deps[:limit])
