"""What every handler finds on the app: the keys under which `create_app` stores things."""

from __future__ import annotations

from aiohttp import web

from api.auth import Tokens
from api.check_cache import CheckCache
from api.check_feed import CheckFeed
from shared.bootstrap import Services
from shared.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
SERVICES = web.AppKey("services", Services)
TOKENS = web.AppKey("tokens", Tokens)
CHECK_CACHE = web.AppKey("check_cache", CheckCache)  # GET /v1/check's answers (api/check_cache.py)
CHECK_FEED: web.AppKey[CheckFeed | None] = web.AppKey("check_feed")  # its LISTEN (api/check_feed.py); None: off
# set when GET /v1/check answered from the cache: its api.request line is at debug level
# (the request metrics still count it), the log line being the largest cost left of a hit
CACHE_HIT = web.RequestKey("cache_hit", bool)
TOKEN_NAME = web.RequestKey("token_name", str)  # the name of the token the request carried

# Every Postgres query of a request gets this long; after it the answer is 503.
DB_TIMEOUT_S = 2.0


def services(request: web.Request) -> Services:
    return request.app[SERVICES]
