"""What the application and its handlers share: typed keys of the app's and requests' state."""

from __future__ import annotations

from aiohttp import web

from bandit.api.auth import KeysSource, Principal
from bandit.api.metrics import Metrics
from bandit.api.origins import OriginPolicy
from bandit.serving.service import BanditService
from bandit.settings import Settings

SERVICE = web.AppKey("service", BanditService)
METRICS = web.AppKey("metrics", Metrics)
SETTINGS = web.AppKey("settings", Settings)
KEYS = web.AppKey("keys", KeysSource)
ORIGINS = web.AppKey("origins", OriginPolicy)
PRINCIPAL = web.RequestKey("principal", Principal)
