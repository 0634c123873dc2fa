from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from twin.region import BUNDLED_DIR


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PLIETSCH_", extra="ignore")

    bootstrap_servers: str = Field(default="", validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    schema_registry_url: str = Field(default="", validation_alias="SCHEMA_REGISTRY_URL")
    region_pack: Path = BUNDLED_DIR / "kiel"
    data_dir: Path = Path(".plietsch")
    max_page_size: int = 1000
    # Aggregate windows older than this (hours of event time behind the newest window seen) leave the read model.
    aggregate_horizon_h: float = Field(default=48.0, gt=0)
    # Deltas kept for SSE clients that resume with Last-Event-ID (further behind: told to take a fresh snapshot), and
    # deltas queued per subscriber before it is cut off. 20,000 deltas are about 20 MB and, at make run's default
    # rate, a couple of minutes of resume; 200,000 (before) grew the API by 120 MB over a 10M-reading soak.
    delta_buffer: int = Field(default=20_000, ge=1)
    subscriber_queue: int = Field(default=10_000, ge=1)

    # Login: local users and API keys in <data_dir>/auth.sqlite3; OIDC bearer tokens when an issuer is set (Keycloak:
    # https://<host>/realms/<realm>), with the audience the tokens must name and the claim that lists the roles.
    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_jwks_url: str = ""  # found by discovery (<issuer>/.well-known/openid-configuration) when empty
    oidc_roles_claim: str = "realm_access.roles"
    session_ttl_h: float = Field(default=12.0, gt=0)
    cookie_secure: bool = False  # set true behind TLS, so the browser sends the session cookie over HTTPS only
    # An operator API key given as a secret from the environment (deployments, tests); at least 32 characters.
    operator_api_key: str = Field(default="", repr=False)
    first_operator: str = "operator"  # created with a one-time password (printed to the log) when there is no operator

    # Limits (api/limits.py): request bodies, live streams per caller and in total, requests a second without a login,
    # scenarios queued or running per user, the area of a bbox.
    max_body_bytes: int = Field(default=65_536, ge=1024)
    sse_per_caller: int = Field(default=5, ge=1)
    sse_total: int = Field(default=200, ge=1)
    # A live client whose connection takes no bytes for this long is cut off (its stream ends; it resumes with
    # Last-Event-ID), so that it holds neither a stream slot nor the deltas queued for it.
    sse_write_timeout_s: float = Field(default=10.0, gt=0)
    public_rate: float = Field(default=20.0, gt=0)
    public_burst: int = Field(default=40, ge=1)
    scenario_quota: int = Field(default=3, ge=1)
    # Scenario results (api/retention.py): deleted this long after a run ended, and all together at most this much disk
    # (oldest first); the sweep runs every scenario_sweep_s seconds.
    scenario_result_ttl_h: float = Field(default=168.0, gt=0)
    scenario_disk_mb: float = Field(default=10_240.0, gt=0)
    scenario_sweep_s: float = Field(default=60.0, gt=0)
    # The pipeline behind the API (api/pipeline.py): /health is 503 when the worker's consumer group (its app id, the
    # same PLIETSCH_APP_ID as the worker's) or the archive sink's is more than health_lag_limit records behind its
    # input topics for health_lag_grace_s seconds; 0 as the limit turns the watch off, an empty group id leaves that
    # group out (a deployment without an archive sink).
    app_id: str = "plietsch-twin"
    archive_group: str = "plietsch-archive"
    health_lag_limit: int = Field(default=10_000, ge=0)
    health_lag_grace_s: float = Field(default=60.0, ge=0)
    health_every_s: float = Field(default=5.0, gt=0)

    @property
    def auth_db(self) -> Path:
        return self.data_dir / "auth.sqlite3"

    @property
    def archive_dir(self) -> Path:
        return self.data_dir / "archive"
