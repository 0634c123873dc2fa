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
    max_page_size: int = 1000
