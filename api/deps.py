from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.readmodel import ReadModel
from api.settings import ApiSettings
from twin.region import RegionPack


def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_pack(request: Request) -> RegionPack:
    return request.app.state.pack  # type: ignore[no-any-return]


def get_read_model(request: Request) -> ReadModel:
    return request.app.state.read_model  # type: ignore[no-any-return]


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
PackDep = Annotated[RegionPack, Depends(get_pack)]
ReadModelDep = Annotated[ReadModel, Depends(get_read_model)]
