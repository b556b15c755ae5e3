"""Named dependencies the routes declare."""

from typing import Annotated

from fastapi import Depends, Request

from prediction_service.core.settings import Settings
from prediction_service.models.registry import Registry
from prediction_service.services import Services


async def get_services(request: Request) -> Services:
    return request.app.state.services


async def get_registry(request: Request) -> Registry:
    return request.app.state.services.registry


async def get_settings_of_app(request: Request) -> Settings:
    return request.app.state.services.settings


ServicesDep = Annotated[Services, Depends(get_services)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings_of_app)]
