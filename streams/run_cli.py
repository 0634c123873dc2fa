"""``plietsch run``: the whole embedded stack under one supervisor (broker, worker, archive sink, scenario service,
simulator, sources, API), and its clean stop."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import typer

from infra.broker import ENV_BOOTSTRAP, BrokerError, EmbeddedBroker, free_port
from streams.cli import _fail, console
from streams.supervisor import Supervisor


def _restore_twin(bootstrap: str, report: Callable[[str], None], should_stop: Callable[[], bool]) -> None:
    """Embedded mode keeps topics in memory: put the twin back before the worker starts. The newest checkpoint (its
    changelogs, outputs and active alerts) and then only the archive's tail after its markers; without a checkpoint,
    the whole archive (a first start)."""
    from streams.checkpoint import checkpoint_root, restore_latest
    from streams.history.store import MANIFEST
    from streams.settings import StreamSettings
    from streams.startup import replay_tail

    settings = StreamSettings()
    t0 = time.monotonic()
    _, covered = restore_latest(bootstrap, checkpoint_root(settings.data_dir), report)
    if not (settings.archive_dir / MANIFEST).is_file() and not covered:
        report(f"no archive at {settings.archive_dir} yet: starting empty")
        return
    what = "the archive's tail after the checkpoint" if covered else "the whole archive (no checkpoint)"
    report(f"replaying {what} from {settings.archive_dir} into the embedded broker ...")
    records, datums = replay_tail(bootstrap, settings.archive_dir, covered, report, should_stop)
    report(f"replayed {datums} events in {records} records; twin restored in {time.monotonic() - t0:.1f} s")


def _start_lorawan(sup: Supervisor, exe: list[str], env: dict[str, str], data_dir: Path) -> str:
    """With PLIETSCH_LORAWAN_REGISTRY set, run the LoRaWAN source (and, without PLIETSCH_LORAWAN_MQTT, a local Mosquitto
    on PLIETSCH_LORAWAN_MOSQUITTO_PORT for ChirpStack or a bridge to publish to). Returns the banner lines."""
    from streams.sources.lorawan.mosquitto import mosquitto_binary, write_config
    from streams.sources.lorawan.source import LoraSettings

    lora = LoraSettings()
    if lora.registry is None:
        return ""
    lines = ""
    child_env = dict(env)
    if not lora.mqtt:
        conf = write_config(data_dir / "mosquitto", lora.mosquitto_port)
        sup.add("mosquitto", [mosquitto_binary(), "-c", str(conf)])
        child_env["PLIETSCH_LORAWAN_MQTT"] = f"mqtt://127.0.0.1:{lora.mosquitto_port}"
        lines += f"  MQTT     mqtt://127.0.0.1:{lora.mosquitto_port} (Mosquitto, for LoRaWAN uplinks)\n"
    sup.add("lorawan", [*exe, "source", "lorawan"], env=child_env)
    return lines + (f"  LoRaWAN  {child_env['PLIETSCH_LORAWAN_MQTT']}, registry {lora.registry}, "
                    f"metrics http://{lora.metrics_host}:{lora.metrics_port}/metrics\n")


def _start_pegelonline(sup: Supervisor, exe: list[str]) -> str:
    """With PLIETSCH_PEGELONLINE_STATIONS set, run the continuous PEGELONLINE source. Returns the banner line."""
    from streams.sources.pegelonline_follow import PegelSettings

    pegel = PegelSettings()
    if not pegel.stations.strip():
        return ""
    sup.add("pegelonline", [*exe, "source", "pegelonline", "--follow"])
    return (f"  PEGEL    {pegel.base_url} stations {pegel.stations}, every {pegel.interval_s:g} s, "
            f"metrics http://{pegel.metrics_host}:{pegel.metrics_port}/metrics\n")


def _start_gbfs(sup: Supervisor, exe: list[str]) -> str:
    """With PLIETSCH_GBFS_STATIONS set, run the GBFS source (PLIETSCH_GBFS_URL, by default SprottenFlotte's feed).
    Returns the banner line."""
    from streams.sources.gbfs.source import GbfsSettings

    gbfs = GbfsSettings()
    if gbfs.stations is None:
        return ""
    sup.add("gbfs", [*exe, "source", "gbfs"])
    return f"  GBFS     {gbfs.url}, stations {gbfs.stations}, metrics http://{gbfs.metrics_host}:{gbfs.metrics_port}/metrics\n"


def _start_gtfs(sup: Supervisor, exe: list[str]) -> str:
    """With PLIETSCH_GTFS_STATIC set, run the GTFS source (buses and departure boards). Returns the banner line."""
    from streams.sources.gtfs.source import GtfsSettings

    gtfs = GtfsSettings()
    if gtfs.static is None:
        return ""
    sup.add("gtfs", [*exe, "source", "gtfs"])
    realtime = ", ".join(u for u in (gtfs.vehicle_positions_url, gtfs.trip_updates_url, gtfs.alerts_url) if u) or "no realtime feed"
    return f"  GTFS     {gtfs.static}, {realtime}, metrics http://{gtfs.metrics_host}:{gtfs.metrics_port}/metrics\n"


# How long each step of a clean stop may take (seconds from the first signal); the whole stop stays within 10 s.
ARCHIVE_GROUP = "plietsch-archive"  # the archive sink's consumer group (streams.archive.run_sink)
STOP_SIMULATOR_S = 2.0
STOP_LAG_S = 4.5
STOP_DRAIN_S = 7.0
STOP_CHECKPOINT_S = 8.3
STOP_ALL_S = 9.3


def run(rate: float, api_port: int, broker_port: int, simulate_: bool) -> None:
    """``plietsch run`` (the options as there): start everything, supervise it until a signal, stop it cleanly."""
    from infra.broker import ENV_EPOCH, new_epoch
    from streams.catalogue import MUNICIPAL_TOPICS, SENSOR_TOPICS, ensure_topics
    from streams.checkpoint import Checkpointer, checkpoint_root
    from streams.serde import make_codec
    from streams.settings import StreamSettings
    from streams.startup import wait_for_lag_zero
    from streams.supervisor import StopSignals, Supervisor

    signals = StopSignals()
    signals.install()
    signals.on_hurry = lambda: console.print("stopping faster (second signal) ...")
    env = dict(os.environ)
    env.setdefault("PLIETSCH_WEB_PORT", str(free_port()))  # the worker's own web page; any free port will do
    broker_proc: EmbeddedBroker | None = None
    if not env.get(ENV_BOOTSTRAP):
        try:
            broker_proc = EmbeddedBroker(port=broker_port).start()
        except BrokerError as exc:
            raise _fail(str(exc)) from exc
        env[ENV_BOOTSTRAP] = broker_proc.bootstrap_servers
        env[ENV_EPOCH] = new_epoch()  # contract 1: offsets restart at 0 in every start of the memory-only broker
    bootstrap = env[ENV_BOOTSTRAP]
    settings = StreamSettings()  # app id, data folder, checkpoint interval (the broker is *bootstrap*)
    sup = Supervisor(lambda m: console.print(f"[yellow]{m}[/]"), env)
    checkpointer: Checkpointer | None = None
    code = 0
    t_start = time.monotonic()
    try:
        ensure_topics(bootstrap)
        if broker_proc is not None:
            _restore_twin(bootstrap, console.print, signals.requested.is_set)
        if not signals.requested.is_set():
            exe = [sys.executable, "-m", "streams.cli"]
            sup.add("worker", [*exe, "worker"])
            sup.add("archive", [*exe, "archive"])
            sup.add("scenarios", [*exe, "scenarios"])
            if simulate_:
                sup.add("simulator", [*exe, "simulate", "--rate", str(rate)])
            lorawan = (_start_lorawan(sup, exe, env, settings.data_dir) + _start_pegelonline(sup, exe)
                       + _start_gbfs(sup, exe) + _start_gtfs(sup, exe))
            sup.add("api", [sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory", "--host", "127.0.0.1",
                            "--port", str(api_port), "--log-level", "warning"])
            if broker_proc is not None:
                checkpointer = Checkpointer(bootstrap, settings.app_id, checkpoint_root(settings.data_dir),
                                            make_codec(settings.schema_registry_url), settings.checkpoint_interval_s,
                                            epoch=env[ENV_EPOCH], report=console.print).start()
            console.print(f"[bold green]Plietsch Twin is running[/] (data is SYNTHETIC where marked; "
                          f"started in {time.monotonic() - t_start:.1f} s)\n"
                          f"  broker   {bootstrap}{' (embedded Tansu, memory only)' if broker_proc else ''}"
                          f"{'; epoch ' + env[ENV_EPOCH] if broker_proc else ''}\n"
                          f"  viewer   http://127.0.0.1:{api_port}/\n"
                          f"  kiosk    http://127.0.0.1:{api_port}/kiosk\n"
                          f"  API docs http://127.0.0.1:{api_port}/docs\n"
                          f"{lorawan}"
                          f"Ctrl-C stops every process.")
        while not signals.sleep(0.2):
            sup.poll()
    except Exception as exc:
        console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}")
        code = 1
    finally:
        t0 = time.monotonic()
        console.print("stopping ...")
        hurry = signals.hurry
        steps: list[str] = []

        def step(name: str, since: list[float] = [t0]) -> None:  # noqa: B006 - the time of the previous step
            now = time.monotonic()
            steps.append(f"{name} {now - since[0]:.1f}")
            since[0] = now

        try:
            # the inputs flush their producers on SIGTERM; the scenario service fails its unfinished runs ("ask again")
            sup.stop(["simulator", "lorawan", "pegelonline", "gbfs", "gtfs", "scenarios"], t0 + STOP_SIMULATOR_S, hurry)
            step("simulator")
            # the worker and the archive sink finish what is in the broker (bounded): their groups' lag is zero
            groups = [g for g, child in ((settings.app_id, "worker"), (ARCHIVE_GROUP, "archive")) if child in sup.children]
            inputs = [t.name for t in (*SENSOR_TOPICS.values(), *MUNICIPAL_TOPICS.values())]
            lag = wait_for_lag_zero(bootstrap, groups, inputs, t0 + STOP_LAG_S, hurry.is_set) if groups else 0
            step("lag")
            if lag:
                console.print(f"[yellow]worker/archive still {lag} record(s) behind; the archive drain and the next "
                              f"start's replay take them[/]")
            sup.stop(["worker", "archive"], t0 + STOP_DRAIN_S, hurry)  # the archive sink drains on SIGTERM
            step("worker+archive")
            if checkpointer is not None:
                budget = t0 + STOP_CHECKPOINT_S - time.monotonic() - 0.5
                checkpointer.checkpoint_now(timeout=max(0.5, min(1.0, budget) if hurry.is_set() else budget))
                checkpointer.stop()
                step("checkpoint")
            sup.stop(["api", "mosquitto"], t0 + STOP_ALL_S, hurry)
            step("api")
        finally:
            sup.kill_all()
            if broker_proc is not None:
                broker_proc.stop(timeout=0.5)  # memory only, and every client is gone: nothing left to lose
                step("broker")
            console.print(f"stopped in {time.monotonic() - t0:.1f} s ({', '.join(steps)})")
    if code:
        raise typer.Exit(code)
