"""Mounts the console on the API's app (api/app.py calls `setup`)."""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from api.console import formats, guard, overview, pages
from api.console.session import Signer
from api.context import SETTINGS

HERE = Path(__file__).parent
STATIC = "console-static"


async def _home(_request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther(f"{guard.ROOT}/")


def setup(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                               trim_blocks=True, lstrip_blocks=True, filters=formats.FILTERS)
    env.globals["static"] = lambda name: str(app.router[STATIC].url_for(filename=name))
    app[guard.SIGNER] = Signer(app[SETTINGS].api_tokens)
    app[overview.STREAMS] = set()
    app.on_shutdown.append(overview.end_streams)
    root = guard.ROOT
    app.router.add_get(root, _home)
    app.router.add_get(f"{root}/sign-in", guard.sign_in_form)
    app.router.add_post(f"{root}/sign-in", guard.sign_in)
    app.router.add_post(f"{root}/sign-out", guard.sign_out)
    app.router.add_get(f"{root}/", pages.search_page)
    app.router.add_get(f"{root}/customers/{{customer_id}}", pages.customer_page)
    app.router.add_post(f"{root}/customers/{{customer_id}}/resync", pages.resync_customer)
    app.router.add_post(f"{root}/replay", pages.replay_event)
    app.router.add_get(f"{root}/failed", pages.failed_page)
    app.router.add_post(f"{root}/deliveries/{{delivery_id}}/retry", pages.retry_delivery)
    app.router.add_get(f"{root}/overview", overview.overview_page)
    app.router.add_get(f"{root}/overview/live", overview.live)
    app.router.add_static(f"{root}/static", HERE / "static", append_version=True, name=STATIC)
