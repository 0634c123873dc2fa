"""The ``plietsch`` command."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from infra.broker import ENV_BOOTSTRAP, BrokerError, EmbeddedBroker

app = typer.Typer(help="Plietsch Twin: an event-driven digital twin of the KielRegion.", no_args_is_help=True)
topics_app = typer.Typer(help="The topic catalogue.", no_args_is_help=True)
schemas_app = typer.Typer(help="Avro schemas: generate, check, publish.", no_args_is_help=True)
region_app = typer.Typer(help="Region packs.", no_args_is_help=True)
source_app = typer.Typer(help="Adapters for real open-data sources.", no_args_is_help=True)
traffic_app = typer.Typer(help="Road traffic: equilibrium assignment on TNTP files or a region pack.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(schemas_app, name="schemas")
app.add_typer(region_app, name="region")
app.add_typer(source_app, name="source")
app.add_typer(traffic_app, name="traffic")
console = Console(stderr=True, soft_wrap=True)  # whole lines in logs: no wrapping at 80 columns


def _fail(message: str, code: int = 2) -> typer.Exit:
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(message)}")  # a message's own brackets are text, not markup
    return typer.Exit(code)


def _register_region_commands() -> None:
    from streams.region_cli import register

    register(region_app, console, _fail)


_register_region_commands()


def _bootstrap() -> str:
    value = os.environ.get(ENV_BOOTSTRAP, "").strip()
    if not value:
        raise _fail(f"{ENV_BOOTSTRAP} is not set. Start a broker with 'plietsch broker' and export the address it "
                    "prints, or use 'make run' which does everything.")
    return value


@app.command()
def broker(port: Annotated[int, typer.Option(help="loopback port, 0 for a free one")] = 0) -> None:
    """Run the embedded Tansu broker (memory only) until Ctrl-C."""
    try:
        b = EmbeddedBroker(port=port).start()
    except BrokerError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"Tansu broker on [bold]{b.bootstrap_servers}[/]; export {ENV_BOOTSTRAP}={b.bootstrap_servers}")
    print(b.bootstrap_servers, flush=True)
    try:
        while b.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        b.stop()


@topics_app.command("create")
def topics_create() -> None:
    """Create every catalogue topic that is missing (idempotent)."""
    from streams.catalogue import TopicSetupError, ensure_topics

    try:
        created = ensure_topics(_bootstrap())
    except TopicSetupError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"created {len(created)} topic(s): {', '.join(created) or '-'}")


@topics_app.command("list")
def topics_list() -> None:
    """Print the catalogue."""
    from rich.table import Table

    from streams.catalogue import ALL_TOPICS

    t = Table("topic", "partitions", "key", "value schemas", "policy")
    for spec in ALL_TOPICS:
        policy = "compact" if spec.compacted else f"delete after {spec.retention_ms // 86_400_000 if spec.retention_ms else '-'} d"
        t.add_row(spec.name, str(spec.partitions), spec.key, ", ".join(spec.value_schemas), policy)
    Console().print(t)


@topics_app.command("tail")
def topics_tail(
    topic: Annotated[str, typer.Argument(help="topic name, e.g. sensor.water-level or dead-letters")],
    n: Annotated[int, typer.Option("-n", help="newest records per partition")] = 20,
) -> None:
    """Print the newest records of a topic as JSON lines, every datum decoded (read_committed)."""
    import json

    from confluent_kafka import KafkaException

    from streams.operations import tail

    try:
        for rec in tail(_bootstrap(), topic, n):
            print(json.dumps(rec, ensure_ascii=False))
    except KafkaException as exc:
        raise _fail(str(exc)) from exc


dead_app = typer.Typer(help="Dead letters: what was refused, why, and replay once the cause is fixed.",
                       invoke_without_command=True)
app.add_typer(dead_app, name="dead-letters")


@dead_app.callback()
def dead_letters_summary(
    ctx: typer.Context,
    list_them: Annotated[bool, typer.Option("--list", help="every dead letter as a JSON line (with its id)")] = False,
) -> None:
    """Count the dead letters by original topic, error type and agent, with the newest reason of each kind."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from streams.operations import as_json, dead_letters, summary

    foreign: list[str] = []
    letters = dead_letters(_bootstrap(), foreign=foreign)
    if foreign:  # on stderr: --list keeps its JSON lines alone on stdout
        console.print(f"[yellow]{len(foreign)} record(s) on the dead-letter topic are not dead letters "
                      f"and are skipped (someone produced to it directly); the first: {foreign[0][:300]}[/]")
    if list_them:
        for d in letters:
            print(as_json(d))
        return
    t = Table("topic", "error type", "agent", "count", "newest reason")
    for topic, kind, agent, n, reason in summary(letters):
        t.add_row(topic, kind, agent, str(n), reason[:200])
    Console().print(t)
    console.print(f"{len(letters)} dead letter(s)")


@dead_app.command("replay")
def dead_letters_replay(ids: Annotated[list[str], typer.Argument(help="dead letter ids (see --list)")]) -> None:
    """Produce the original bytes of these dead letters to their topic again, once each (after fixing the cause,
    e.g. adding a sensor to the region pack); a dead letter already replayed is refused."""
    from streams.operations import ReplayError, dead_letters, replay

    bs = _bootstrap()
    try:
        done = replay(bs, dead_letters(bs), ids)
    except ReplayError as exc:
        raise _fail(str(exc)) from exc
    for d in done:
        console.print(f"replayed {d.dead_letter_id} into {d.original_topic} ({d.error_type}: {d.reason[:120]})")


@app.command()
def worker(loglevel: str = "warning") -> None:
    """Run the Faust worker (the twin's agents)."""
    import faust

    from streams.app import TwinApp
    from streams.catalogue import ensure_topics
    from streams.settings import StreamSettings

    settings = StreamSettings()
    _bootstrap()
    ensure_topics(settings.bootstrap_servers)
    twin = TwinApp(settings)
    w = faust.Worker(twin.app, loglevel=loglevel, quiet=True)
    # Faust's start-up spinner, at a log level of WARN or above, sets the root logger to DEBUG so that every log call
    # moves it: then every debug line of aiokafka's fetcher and of the hot path builds a LogRecord that no handler
    # writes (7 % of the worker's CPU at 200 readings/s, py-spy). Without it the root logger keeps *loglevel*.
    w.spinner = None
    w.execute_from_commandline()


@app.command()
def scenarios() -> None:
    """Run the scenario service: storm-surge and traffic scenarios beside the worker, at a lower CPU priority."""
    from streams.scenario_service import serve

    _bootstrap()
    serve()


@app.command()
def simulate(
    rate: Annotated[float, typer.Option(help="events per second")] = 50.0,
    seed: Annotated[int, typer.Option(help="seed for repeatable runs")] = 42,
    count: Annotated[int, typer.Option(help="stop after this many events; 0 runs until Ctrl-C")] = 0,
    time_scale: Annotated[float, typer.Option(help="simulated seconds per wall second")] = 1.0,
    start: Annotated[str, typer.Option(help="simulated start time, ISO 8601 with offset; default now")] = "",
    surge_in_h: Annotated[float, typer.Option(help="storm-surge peak this many simulated hours after start; <0: none")] = -1.0,
    surge_peak_m: Annotated[float, typer.Option(help="surge peak above mean water level, metres")] = 1.95,
) -> None:
    """Produce plausible synthetic readings for the region's sensors."""
    from streams.publisher import EventPublisher
    from streams.serde import make_codec
    from streams.settings import StreamSettings
    from streams.simulator import SimulatorConfig, run
    from twin.profiles import Surge
    from twin.region import load_pack

    if rate <= 0:
        raise _fail(f"--rate must be positive, got {rate}")
    settings = StreamSettings()
    _bootstrap()
    try:
        t0 = datetime.fromisoformat(start) if start else datetime.now(UTC)
    except ValueError:
        raise _fail(f"--start {start!r} is not ISO 8601, e.g. 2023-10-20T12:00:00+02:00") from None
    if t0.tzinfo is None:
        raise _fail(f"--start {start!r} has no UTC offset; add one, e.g. +01:00")
    surge = Surge(peak_at=t0 + timedelta(hours=surge_in_h), peak_m=surge_peak_m) if surge_in_h >= 0 else None
    pack = load_pack(settings.region_pack)
    pub = EventPublisher(settings.bootstrap_servers, make_codec(settings.schema_registry_url),
                         linger_ms=settings.batch_linger_ms, max_datums=settings.batch_max_datums)
    stop = {"now": False}
    for sig in (signal.SIGTERM, signal.SIGINT):  # stop after the current round, then flush every queued reading
        signal.signal(sig, lambda *_: stop.__setitem__("now", True))
    console.print(f"simulating {len(pack.sensors)} sensors of {pack.id!r} at {rate:g} ev/s (seed {seed}); data is SYNTHETIC")
    n = run(pack, pub, SimulatorConfig(rate=rate, seed=seed, start=t0, time_scale=time_scale, surge=surge),
            limit=count or None, should_stop=lambda: stop["now"],
            on_progress=lambda sent, r: console.print(f"  {sent} events, {r:,.0f} ev/s"))
    console.print(f"sent {n} events, every one acknowledged by the broker")


@app.command()
def archive(flush_every_s: Annotated[float, typer.Option(help="seconds between archive flushes")] = 2.0) -> None:
    """Run the archive sink: input topics into Avro container files under PLIETSCH_DATA_DIR/archive."""
    from streams.archive import run_sink
    from streams.serde import make_codec
    from streams.settings import StreamSettings

    settings = StreamSettings()
    _bootstrap()
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("now", True))
    console.print(f"archiving to {settings.archive_dir}")
    try:
        n = run_sink(settings.bootstrap_servers, make_codec(settings.schema_registry_url), settings.archive_dir,
                     flush_every_s=flush_every_s, should_stop=lambda: stop["now"])
    except KeyboardInterrupt:
        return
    console.print(f"archived {n} events")


@app.command("at")
def twin_at(
    time_: Annotated[str, typer.Option("--time", help="ISO 8601 with offset; default: the end of the archive")] = "",
    sensor: Annotated[list[str] | None, typer.Option(help="only these sensor ids")] = None,
) -> None:
    """Rebuild the twin from the archive as it stood at a time, and print it as JSON."""
    import json

    from streams.archive import rebuild
    from streams.settings import StreamSettings
    from twin.region import load_pack

    settings = StreamSettings()
    at = None
    if time_:
        try:
            at = datetime.fromisoformat(time_)
        except ValueError:
            raise _fail(f"--time {time_!r} is not ISO 8601, e.g. 2023-10-20T21:33:00+02:00") from None
        if at.tzinfo is None:
            raise _fail(f"--time {time_!r} has no UTC offset; add one, e.g. +01:00")
    if not settings.archive_dir.is_dir():
        raise _fail(f"no archive at {settings.archive_dir}; run the stack ('make run') or set PLIETSCH_DATA_DIR")
    state = rebuild(settings.archive_dir, load_pack(settings.region_pack), at)
    wanted = set(sensor or state.sensors)
    print(json.dumps({
        "as_of": state.as_of.isoformat() if state.as_of else None, "events_applied": state.events_applied,
        "sensors": {k: v.to_json() for k, v in state.sensors.items() if k in wanted},
        "coast": {k: v.to_json() for k, v in state.coast.items()},
        "active_alerts": {k: v.model_dump(mode="json") for k, v in state.alerts.items()},
    }, indent=2, default=str))


@schemas_app.command("generate")
def schemas_generate() -> None:
    """Write schemas/avro/*.avsc from the event models."""
    from streams.schematools import generate

    changed = generate()
    console.print(f"{len(changed)} schema file(s) changed")


@schemas_app.command("check")
def schemas_check() -> None:
    """Fail when a schema is not BACKWARD compatible with its latest published version."""
    from streams.schematools import check_backward

    problems = check_backward()
    for name, ps in problems.items():
        for p in ps:
            console.print(f"[red]{name}[/]: {p}")
    if problems:
        raise typer.Exit(1)
    console.print("all schemas BACKWARD compatible")


@schemas_app.command("publish")
def schemas_publish() -> None:
    """Store changed schemas as their next version, after the compatibility check."""
    from streams.schematools import publish

    try:
        written = publish()
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"published {len(written)} schema version(s)")


@source_app.command("pegelonline")
def source_pegelonline(
    station: Annotated[str, typer.Option(help="WSV station number")] = "9610066",
    measurements: Annotated[Path | None, typer.Option(help="a saved measurements.json; without it, fetch the last day")] = None,
    stations: Annotated[Path | None, typer.Option(help="a saved stations.json, to find the station's uuid offline")] = None,
    sensor: Annotated[str | None, typer.Option(help="sensor id to report as; default from the station table")] = None,
    mean_cm: Annotated[float | None, typer.Option(help="mean water level, cm above gauge zero")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="poll continuously until SIGTERM/Ctrl-C (settings "
                                         "PLIETSCH_PEGELONLINE_*; README, PEGELONLINE)")] = False,
) -> None:
    """Publish PEGELONLINE water levels (cm above gauge zero) as readings in metres above mean water level: once, or
    with --follow continuously (conditional requests, backoff, dedup across restarts, dead letters, /metrics)."""
    if follow:
        _follow_pegelonline()
        return
    from streams.catalogue import SENSOR_TOPICS
    from streams.publisher import EventPublisher
    from streams.serde import make_codec
    from streams.settings import StreamSettings
    from streams.sources import pegelonline as pg

    known = pg.STATIONS.get(station)
    sensor_id = sensor or (known[0] if known else None)
    mean = mean_cm if mean_cm is not None else (known[1] if known else None)
    if sensor_id is None or mean is None:
        raise _fail(f"station {station} is not in the station table; give --sensor and --mean-cm")
    try:
        if measurements is not None:
            raw = measurements.read_bytes()
        else:
            listing = stations.read_bytes() if stations else pg.fetch(f"{pg.BASE_URL}/stations.json")
            raw = pg.fetch(pg.measurements_url(pg.find_station(listing, station).uuid))
        events, problems = pg.parse_measurements(raw, sensor_id, mean)
    except (pg.PegelonlineError, OSError) as exc:
        raise _fail(f"PEGELONLINE: {exc}") from exc
    for p in problems:
        console.print(f"[yellow]skipped[/] {p}")
    settings = StreamSettings()
    _bootstrap()
    pub = EventPublisher(settings.bootstrap_servers, make_codec(settings.schema_registry_url))
    for e in events:
        pub.add(SENSOR_TOPICS["water_level"].name, sensor_id, e)
    pub.flush()
    console.print(f"published {len(events)} water level(s) for {sensor_id}, skipped {len(problems)}")


def _follow_pegelonline() -> None:
    from streams.catalogue import ensure_topics
    from streams.serde import make_codec
    from streams.settings import StreamSettings
    from streams.sources.pegelonline_follow import ConfigError, PegelSettings, build

    settings, pegel = StreamSettings(), PegelSettings()
    _bootstrap()
    ensure_topics(settings.bootstrap_servers)
    try:
        source = build(pegel, settings.bootstrap_servers, settings.data_dir, make_codec(settings.schema_registry_url),
                       console.print)
    except ConfigError as exc:
        raise _fail(str(exc)) from exc
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: source.stop_event.set())
    source.start()
    console.print(f"PEGELONLINE source: {pegel.base_url}, stations {pegel.stations}, every {pegel.interval_s:g} s; "
                  f"metrics on http://{pegel.metrics_host}:{pegel.metrics_port}/metrics")
    try:
        source.run()
    except ConfigError as exc:
        raise _fail(str(exc)) from exc
    finally:
        source.stop()
    console.print("PEGELONLINE source stopped")


@source_app.command("lorawan")
def source_lorawan() -> None:
    """Run the LoRaWAN source until SIGTERM/Ctrl-C: TTS v3 and ChirpStack v4 uplinks from MQTT into readings
    (settings PLIETSCH_LORAWAN_*: MQTT, REGISTRY, TOPICS, METRICS_PORT; see README, LoRaWAN)."""
    from streams.catalogue import ensure_topics
    from streams.serde import make_codec
    from streams.settings import StreamSettings
    from streams.sources.lorawan.registry import RegistryError
    from streams.sources.lorawan.source import LoraSettings, build

    settings, lora = StreamSettings(), LoraSettings()
    if not lora.mqtt:
        raise _fail("PLIETSCH_LORAWAN_MQTT is not set: give the MQTT server, e.g. mqtt://127.0.0.1:1883 (ChirpStack) or "
                    "mqtts://eu1.cloud.thethings.network:8883 (TTS)")
    _bootstrap()
    ensure_topics(settings.bootstrap_servers)
    try:
        source = build(lora, settings.bootstrap_servers, settings.region_pack, settings.data_dir,
                       make_codec(settings.schema_registry_url), console.print)
    except (RegistryError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    stop = {"now": False}
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.__setitem__("now", True))
    source.start()
    console.print(f"LoRaWAN source: MQTT {lora.mqtt}, metrics on http://{lora.metrics_host}:{lora.metrics_port}/metrics")
    try:
        source.run(lambda: stop["now"])
    finally:
        source.stop()
    console.print("LoRaWAN source stopped")


@source_app.command("gbfs")
def source_gbfs() -> None:
    """Run the GBFS 3.0 bike sharing source until SIGTERM/Ctrl-C: station status into bike_share readings, each file
    polled by its ttl and checked against the GBFS 3.0 JSON Schemas (settings PLIETSCH_GBFS_*: URL, STATIONS,
    METRICS_PORT; see docs/gbfs.md)."""
    from streams.catalogue import ensure_topics
    from streams.serde import make_codec
    from streams.settings import StreamSettings
    from streams.sources.gbfs.mapping import MappingError
    from streams.sources.gbfs.source import GbfsSettings, build

    settings, gbfs = StreamSettings(), GbfsSettings()
    _bootstrap()
    try:  # the mapping is checked first: a wrong one is refused at once, whatever the broker does
        source = build(gbfs, settings.bootstrap_servers, settings.region_pack, settings.data_dir,
                       make_codec(settings.schema_registry_url), console.print)
    except MappingError as exc:
        raise _fail(str(exc)) from exc
    ensure_topics(settings.bootstrap_servers)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: source.stop_event.set())
    source.start()
    console.print(f"GBFS source: {gbfs.url}, metrics on http://{gbfs.metrics_host}:{gbfs.metrics_port}/metrics")
    try:
        source.run()
    finally:
        source.stop()
    console.print("GBFS source stopped")


@source_app.command("gtfs")
def source_gtfs() -> None:
    """Run the GTFS source until SIGTERM/Ctrl-C: the GTFS schedule (PLIETSCH_GTFS_STATIC) with its GTFS-Realtime
    vehicle positions and trip updates (PLIETSCH_GTFS_VEHICLE_POSITIONS_URL, _TRIP_UPDATES_URL) into the twin: one
    entity per bus, a departure board per stop (README, section GTFS)."""
    from streams.catalogue import ensure_topics
    from streams.serde import make_codec
    from streams.settings import StreamSettings
    from streams.sources.gtfs.source import GtfsSettings, build

    settings, gtfs = StreamSettings(), GtfsSettings()
    _bootstrap()
    try:  # the schedule is checked first: a broken one is refused at once, whatever the broker does
        source = build(gtfs, settings.bootstrap_servers, settings.region_pack, make_codec(settings.schema_registry_url),
                       console.print, settings.data_dir)
    except ValueError as exc:  # GtfsError, an unknown board stop, no PLIETSCH_GTFS_STATIC
        raise _fail(str(exc)) from exc
    ensure_topics(settings.bootstrap_servers)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: source.stop_event.set())
    source.start()
    feeds = ", ".join(f"{f.name} {f.url}" for f in source.feeds.values())
    console.print(f"GTFS source: {feeds}; metrics on http://{gtfs.metrics_host}:{gtfs.metrics_port}/metrics")
    try:
        source.run()
    finally:
        source.stop()
    console.print("GTFS source stopped")


@region_app.command("import")
def region_import(
    pack: Annotated[Path, typer.Option(help="region pack folder to update")] = Path("twin/regions/kiel"),
    osm: Annotated[Path | None, typer.Option(help="OpenStreetMap XML extract (buildings, roads)")] = None,
    cityjson: Annotated[Path | None, typer.Option(help="CityJSON file with LoD1/LoD2 buildings")] = None,
    dgm: Annotated[Path | None, typer.Option(help="GeoTIFF elevation model (DGM1)")] = None,
    source_crs: Annotated[str, typer.Option(help="CRS of files that do not name one")] = "EPSG:25832",
    licence: Annotated[str | None, typer.Option(help="licence of the imported data, e.g. ODbL-1.0 or DL-DE/BY-2.0")] = None,
) -> None:
    """Import real open data into a region pack, replacing its synthetic layers."""
    from twin.importers import ImportError_, import_into_pack
    from twin.region import RegionPackError

    if osm is None and cityjson is None and dgm is None:
        raise _fail("nothing to import: give --osm, --cityjson and/or --dgm")
    try:
        report = import_into_pack(pack, osm=osm, cityjson=cityjson, dgm=dgm, source_crs=source_crs, licence=licence)
    except (ImportError_, RegionPackError) as exc:
        raise _fail(str(exc)) from exc
    for line in report:
        console.print(f"  {line}")


@traffic_app.command("assign")
def traffic_assign(
    tntp_net: Annotated[Path | None, typer.Option(help="TNTP network file (..._net.tntp)")] = None,
    tntp_trips: Annotated[Path | None, typer.Option(help="TNTP trips file (..._trips.tntp)")] = None,
    pack: Annotated[Path | None, typer.Option(help="a region pack instead of TNTP files (its roads, zones and the "
                                                   "SYNTHETIC gravity demand)")] = None,
    gap: Annotated[float, typer.Option(help="relative gap to stop at")] = 1e-4,
    max_iterations: Annotated[int, typer.Option(help="stop after this many iterations even if the gap is not reached")] = 1000,
    algorithm: Annotated[str, typer.Option(help="cfw (conjugate Frank-Wolfe) or fw (plain Frank-Wolfe)")] = "cfw",
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Static user-equilibrium assignment (BPR costs): iterations, relative gap, Beckmann objective, total system
    travel time and time taken. Progress goes to stderr while it runs."""
    import json

    import numpy as np

    from twin.region import RegionPackError, load_pack
    from twin.traffic.assign import Graph, assign, shortest
    from twin.traffic.network import NetworkError, read_tntp_net, read_tntp_trips

    if algorithm not in ("cfw", "fw"):
        raise _fail(f"--algorithm {algorithm!r} is not known; use cfw or fw")
    if max_iterations < 1:
        raise _fail(f"--max-iterations must be 1 or more, got {max_iterations}")
    started = time.perf_counter()
    try:
        if pack is not None:
            if tntp_net is not None or tntp_trips is not None:
                raise _fail("give either --pack or --tntp-net with --tntp-trips, not both")
            from twin.traffic.pack import gravity, network_of

            net, zones = network_of(load_pack(pack))
            skim, _ = shortest(Graph(net, np.ones(net.n_links, dtype=bool)), net.fft, None)
            od = gravity(net, zones, skim)
            source = f"region pack {pack} (demand: SYNTHETIC gravity preset)"
        else:
            if tntp_net is None or tntp_trips is None:
                raise _fail("give --tntp-net and --tntp-trips (TNTP files), or --pack for a region pack")
            net = read_tntp_net(tntp_net)
            od = read_tntp_trips(tntp_trips, len(net.zones))
            source = f"{tntp_net.name} + {tntp_trips.name}"
        console.print(f"{source}: {net.n_nodes:,} nodes, {net.n_links:,} links, {len(net.zones):,} zones, "
                      f"{od.sum():,.1f} trips; read in {time.perf_counter() - started:.2f} s")
        last = [0.0]

        def progress(it: int, g: float, seconds: float) -> None:
            if seconds - last[0] >= 1.0 or it <= 3:
                last[0] = seconds
                console.print(f"  iteration {it}: relative gap {g:.3e} after {seconds:.1f} s")

        res = assign(net, od, gap=gap, max_iterations=max_iterations, on_iteration=progress, algorithm=algorithm)
    except (NetworkError, RegionPackError) as exc:
        raise _fail(str(exc)) from exc
    out = res.summary()
    out["links"], out["zones"], out["trips"] = net.n_links, len(net.zones), float(od.sum())
    if as_json:
        print(json.dumps(out))
    else:
        print(f"iterations {res.iterations}, relative gap {res.gap:.3e} ({'converged' if res.converged else 'NOT converged'}), "
              f"Beckmann objective {res.objective:.6g}, total system travel time {res.tstt:.6g}, {res.seconds:.2f} s")
        if res.unreachable:
            print(f"{len(res.unreachable)} zone pairs cannot be reached ({sum(t for *_, t in res.unreachable):g} trips "
                  f"not assigned), e.g. {', '.join(f'{o} -> {d}' for o, d, _ in res.unreachable[:5])}")
    if not res.converged:
        raise typer.Exit(1)


@app.command("run")
def run_all(
    rate: Annotated[float, typer.Option(help="simulator events per second")] = 200.0,
    api_port: Annotated[int, typer.Option(help="API and viewer port")] = 8000,
    broker_port: Annotated[int, typer.Option(help="embedded broker port, 0 for a free one")] = 0,
    simulate_: Annotated[bool, typer.Option("--simulate/--no-simulate", help="run the simulator")] = True,
) -> None:
    """Run the whole embedded stack: broker, Faust worker, archive sink, scenario service, simulator, configured
    sources and API (streams/run_cli.py). Ctrl-C stops everything
    cleanly (a second Ctrl-C hurries the stop); a child that dies is restarted."""
    from streams.run_cli import run

    run(rate, api_port, broker_port, simulate_)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
