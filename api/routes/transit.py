"""The public real-time departure board of a bus stop (issue 13 item 3), as the region's bus stop displays show it.

The board is the stop entity the GTFS source writes into the twin (``streams/sources/gtfs``: the schedule with the
delays of GTFS-Realtime TripUpdates); this route only picks the departures still to come at the time of the request.
No personal data: routes, destinations and times only.

``GET /stops`` lists the region's stops from the GTFS schedule itself (``PLIETSCH_GTFS_STATIC``, the file the source
reads), read once on the first call and kept: every stop with departures inside the region's bbox, whether or not the
source writes a board for it.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from api.deps import PackDep, ReadModelDep, SettingsDep
from api.filters import BBOX, check_neighbourhood, parse_bbox
from streams.sources.gtfs.realtime import entity_name
from streams.sources.gtfs.source import GtfsSettings, region_stops, stop_entity
from streams.sources.gtfs.static import GtfsError, load_schedule, route_order
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


class StopAlert(BaseModel):
    alert_id: str = Field(description="ID der Meldung im GTFS-Realtime-Feed (Alerts)")
    header: dict[str, str] = Field(description="Überschrift der Meldung, wie der Feed sie gibt, nach Sprache: 'de' "
                                               "und/oder 'en' (andere Sprachen und weiterer Freitext werden nicht "
                                               "übernommen); leer, wenn der Feed keine deutsche oder englische gibt")
    cause: str = Field(description="Ursache laut Feed (GTFS-Realtime Alert.Cause, z. B. CONSTRUCTION)")
    effect: str = Field(description="Auswirkung laut Feed (GTFS-Realtime Alert.Effect, z. B. DETOUR, NO_SERVICE)")
    routes: list[str] = Field(description="Betroffene Linien (route_short_name); leer, wenn die Meldung nur "
                                          "Haltestellen nennt")
    active_until: datetime | None = Field(description="Ende der Gültigkeit; null ohne angegebenes Ende")


class StopBase(BaseModel):
    stop_id: str = Field(description="Haltestellen-ID aus dem GTFS-Fahrplan (stops.txt)")
    entity_id: str = Field(description="Die Haltestelle im Zwilling, '<Region>:<Stadtteil oder _>:stop:<Name>'")
    name: str = Field(description="Name der Haltestelle")
    lat: float = Field(description="Breitengrad, WGS84")
    lon: float = Field(description="Längengrad, WGS84")


class Provenance(BaseModel):
    source: str = Field(description="Herkunft der Daten (GTFS-Fahrplan); 'SYNTHETIC' im Namen heißt: erfundene Testdaten")
    synthetic: bool = Field(description="true bei erfundenen Testdaten (SYNTHETIC), nicht dem echten Fahrplan")


class Board(StopBase, Provenance):
    board_at: datetime = Field(description="Wann die Quelle die Tafel zuletzt berechnet hat")
    now: datetime = Field(description="Zeitpunkt dieser Antwort; gezeigt werden Abfahrten ab jetzt")
    departures: list[Departure] = Field(description="Die nächsten Abfahrten, früheste zuerst")
    alerts: list[StopAlert] = Field(default_factory=list, description="Aktuelle Störungsmeldungen für diese "
                                    "Haltestelle oder ihre Linien (GTFS-Realtime Alerts)")


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
                 synthetic=bool(state.get("synthetic")) or "SYNTHETIC" in state["name"].upper(), departures=deps[:limit],
                 alerts=[StopAlert.model_validate(a) for a in state.get("alerts", [])])


class StopInfo(StopBase):
    neighbourhood: str | None = Field(description="Stadtteil, in dem die Haltestelle liegt (Kurzname wie 'gaarden'); "
                                                  "null außerhalb aller Stadtteile der Region")
    routes: list[str] = Field(description="Linien, die hier abfahren (route_short_name), aufsteigend; die "
                                          "Abfahrtstafel: GET /stops/{stop_id}/departures")


class StopList(Provenance):
    total: int = Field(description="Anzahl aller Haltestellen, auf die die Filter passen")
    offset: int = Field(description="So viele Haltestellen wurden übersprungen (Blättern)")
    limit: int = Field(description="Höchstens so viele Haltestellen stehen in dieser Seite")
    stops: list[StopInfo] = Field(description="Die Haltestellen dieser Seite, nach stop_id sortiert")


_stops_lock = threading.Lock()


def _region_stop_list(request: Request, pack: Any) -> dict[str, Any]:
    """The region's stops of the schedule, read on the first call and kept in the app (per schedule path)."""
    path = GtfsSettings().static
    if path is None:
        raise HTTPException(404, "kein Fahrplan: die GTFS-Quelle ist nicht eingerichtet (PLIETSCH_GTFS_STATIC nicht "
                                 "gesetzt; README, Abschnitt GTFS)")
    with _stops_lock:
        cached = getattr(request.app.state, "gtfs_stops", None)
        if cached is not None and cached["path"] == FilePath(path):
            return cached  # type: ignore[no-any-return]
        try:
            schedule = load_schedule(FilePath(path))
        except GtfsError as exc:
            raise HTTPException(503, f"der Fahrplan ist gerade nicht lesbar: {exc}") from None
        stops = []
        for sid in sorted(region_stops(schedule, pack)):
            st, eid = schedule.stops[sid], stop_entity(schedule, pack, sid)
            routes = {schedule.routes[schedule.trips[t.trip_id].route_id] for t in schedule.by_stop[sid]}
            stops.append(StopInfo(stop_id=sid, entity_id=str(eid), name=st.name,
                                  neighbourhood=None if eid.scope == "_" else eid.scope, lat=st.lat, lon=st.lon,
                                  routes=sorted(routes, key=route_order)))
        cached = {"path": FilePath(path), "source": schedule.source, "synthetic": schedule.synthetic, "stops": stops}
        request.app.state.gtfs_stops = cached
        return cached


@router.get("/stops", operation_id="list_stops", response_model=StopList,
            summary="Die Haltestellen der Region aus dem GTFS-Fahrplan, gefiltert und seitenweise",
            responses={404: {"description": "Kein Fahrplan eingerichtet (PLIETSCH_GTFS_STATIC nicht gesetzt), oder "
                                            "unbekannter Stadtteil"},
                       503: {"description": "Der Fahrplan (PLIETSCH_GTFS_STATIC) ist nicht lesbar: der Grund steht in "
                                            "'detail'"}})
def list_stops(
    request: Request, pack: PackDep, settings: SettingsDep,
    neighbourhood: Annotated[str | None, Query(description="nur Haltestellen in diesem Stadtteil (Kurzname, z. B. "
                                                           "'gaarden')")] = None,
    bbox: Annotated[str | None, Query(json_schema_extra=BBOX)] = None,
    limit: Annotated[int, Query(ge=1, description="höchstens so viele Haltestellen (bis PLIETSCH_MAX_PAGE_SIZE)")] = 100,
    offset: Annotated[int, Query(ge=0, description="so viele Haltestellen überspringen (Blättern)")] = 0,
) -> StopList:
    """Die Haltestellen mit Abfahrten im Gebiet der Region: ID, Name, Stadtteil, Lage und die Linien, die dort
    abfahren. Filter nach Stadtteil oder Ausschnitt (bbox); seitenweise mit limit und offset."""
    if limit > settings.max_page_size:
        raise HTTPException(422, f"limit {limit} liegt über der größten Seite {settings.max_page_size}; mit offset "
                                 "blättern")
    check_neighbourhood(pack, neighbourhood, german=True)
    box = parse_bbox(bbox) if bbox is not None else None
    data = _region_stop_list(request, pack)
    stops = [s for s in data["stops"] if (neighbourhood is None or s.neighbourhood == neighbourhood) and
             (box is None or (box[0] <= s.lon <= box[2] and box[1] <= s.lat <= box[3]))]
    return StopList(total=len(stops), offset=offset, limit=limit, source=data["source"], synthetic=data["synthetic"],
                    stops=stops[offset: offset + limit])
