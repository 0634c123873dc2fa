"""Settings from the environment (``PLIETSCH_*`` and the usual Kafka variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from twin.region import BUNDLED_DIR


class StreamSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PLIETSCH_", extra="ignore")

    bootstrap_servers: str = Field(default="", validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    schema_registry_url: str = Field(default="", validation_alias="SCHEMA_REGISTRY_URL")
    app_id: str = "plietsch-twin"
    region_pack: Path = BUNDLED_DIR / "kiel"
    data_dir: Path = Path(".plietsch")
    topic_partitions: int = 4
    replication_factor: int = 1
    # Short group timings suit the embedded broker; a real cluster works with them too.
    session_timeout_s: float = 6.0
    heartbeat_interval_s: float = 1.0
    rebalance_timeout_s: float = 6.0
    web_port: int = 6066
    # How long producers linger to build a batch record, and the most datums in one.
    batch_linger_ms: int = 20
    batch_max_datums: int = 2000
    # How long a fetch may wait for data on a quiet partition (latency of every hop on a quiet stream).
    fetch_max_wait_ms: int = 100
    # Extra stream processors, comma-separated 'module:attribute' (see streams/processors.py).
    processors: str = ""
    # Which broker incarnation the offsets belong to: 'plietsch run' sets a fresh one for each start of the memory-only
    # embedded broker (offsets restart at 0 there); "kafka" means a durable cluster whose offsets never restart.
    broker_epoch: str = "kafka"
    # Aggregate windows older than this (hours of event time behind the newest reading) leave the hot state.
    aggregate_horizon_h: float = 48.0
    # The worker warns when its consumer lag (records, all input partitions) is above this and rising over three
    # progress reports (10 s apart), at most once per lag_warning_every_s.
    lag_warning_records: int = 50_000
    lag_warning_every_s: float = 60.0
    # Seconds between checkpoints of the twin's state (embedded mode).
    checkpoint_interval_s: float = 60.0
    # The archive sink writes a snapshot of the twin every this many archived events: time travel (the viewer's slider,
    # /history/state) folds at most this many events after one. ~14 kB each (gzip): at 200 readings/s about 120 MB a day.
    snapshot_every: int = 2_000

    @property
    def archive_dir(self) -> Path:
        return self.data_dir / "archive"
