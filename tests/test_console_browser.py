"""The operator console in a real headless Chromium (selenium + Debian's chromium-driver;
.ci/run installs them): docs/contract.md §11.

The customer's story is played on the fake Stripe with real worker processes (the whole stack,
tests/support/stack.py), so every row the console reads was written by the service itself.
Selenium's calls block, and the API is served in this test's event loop: they run in a thread.
Screenshots go to the test's tmp dir (and to $CONSOLE_SCREENSHOTS when set).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp.test_utils import TestServer
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from api.app import create_app
from fakestripe import Settings as FakeSettings
from shared.settings import Settings
from tests.support.stack import API_KEY, DAY, Stack

SECRET = "browser-test-secret-0123456789"
HOUR = 3600
T = TypeVar("T")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                reason="needs chromium and chromium-driver (apt; .ci/run installs them)")


@pytest.fixture
def driver() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    assert CHROMIUM is not None
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400",
                 "--disable-gpu"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(DRIVER))
    yield browser
    browser.quit()


@pytest.fixture
def shots(tmp_path: Path) -> Callable[[WebDriver, str], Path]:
    def take(browser: WebDriver, name: str) -> Path:
        path = tmp_path / f"{name}.png"
        browser.save_screenshot(str(path))
        if os.environ.get("CONSOLE_SCREENSHOTS"):
            target = Path(os.environ["CONSOLE_SCREENSHOTS"])
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target / path.name)
        return path
    return take


@contextlib.asynccontextmanager
async def console(database_url: str, redis_url: str) -> AsyncIterator[str]:
    settings = Settings(database_url=database_url, redis_url=redis_url, stripe_api_key=API_KEY,
                        api_tokens={"support": SECRET}, log_format="json")
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}/console"
    finally:
        await server.close()


async def run(call: Callable[[], T]) -> T:
    return await asyncio.to_thread(call)


def sign_in(browser: WebDriver, base: str, secret: str = SECRET) -> None:
    browser.get(f"{base}/sign-in")
    browser.find_element(By.NAME, "secret").send_keys(secret)
    browser.find_element(By.CSS_SELECTOR, "#sign-in button").click()
    WebDriverWait(browser, 10).until(lambda b: "signed in as" in b.page_source)


def rows_of(browser: WebDriver) -> dict[str, list[tuple[str, float, float]]]:
    """The picture's rows: label -> [(status, x, width)] of each rectangle, left to right."""
    found: dict[str, list[tuple[str, float, float]]] = {}
    for row in browser.find_elements(By.CSS_SELECTOR, "#picture g.row"):
        rects = [(r.get_attribute("data-status") or "", float(r.get_attribute("x") or 0),
                  float(r.get_attribute("width") or 0)) for r in row.find_elements(By.TAG_NAME, "rect")]
        found[row.get_attribute("data-label") or ""] = sorted(rects, key=lambda r: r[1])
    return found


async def play_story(stack: Stack) -> tuple[str, str, str]:
    """trial → paused → resubscribed → upgraded → past_due → recovered; (customer, sub 1, sub 2)."""
    _, basic = await stack.product("Basic", ["basic"])
    _, pro = await stack.product("Pro", ["basic", "pro"])
    clock, t0 = await stack.clock()
    session = await stack.checkout(basic, user="u_story", clock=clock, card=None, trial_days=1,
                                   missing_payment_method="pause", payment_link="plink_story")
    cus, first = session["customer"], session["subscription"]
    await stack.wait_features(cus, {"basic"})
    await stack.advance(clock, t0 + DAY + HOUR)  # the trial ends without a card: paused
    await stack.wait_features(cus, set())
    await stack.stripe.v1.customers.update_async(cus, {"invoice_settings": {"default_payment_method": "pm_card_visa"}})
    second = await stack.subscribe(cus, basic)  # resubscribed
    await stack.wait_features(cus, {"basic"})
    item = (await stack.stripe.v1.subscriptions.retrieve_async(second))["items"].data[0].id
    await stack.stripe.v1.subscriptions.update_async(second, {"items": [{"id": item, "price": pro}]})  # upgraded
    await stack.wait_features(cus, {"basic", "pro"})
    await stack.settle()
    await stack.stripe.v1.customers.update_async(
        cus, {"invoice_settings": {"default_payment_method": "pm_card_chargeCustomerFail"}})
    period_end = (await stack.stripe.v1.subscriptions.retrieve_async(second))["items"].data[0].current_period_end
    await stack.advance(clock, period_end + HOUR)  # the renewal fails: past_due, in grace
    await stack.settle()
    assert (await stack.stripe.v1.subscriptions.retrieve_async(second)).status == "past_due"
    await stack.stripe.v1.customers.update_async(cus, {"invoice_settings": {"default_payment_method": "pm_card_visa"}})
    await stack.advance(clock, period_end + 5 * DAY + 2 * HOUR)  # a retry succeeds: recovered
    await stack.settle()
    assert (await stack.stripe.v1.subscriptions.retrieve_async(second)).status == "active"
    return cus, first, second


@pytest.mark.slow
async def test_a_customers_story_in_the_browser(stack_factory: Any, driver: WebDriver,
                                                shots: Callable[[WebDriver, str], Path]) -> None:
    async with stack_factory(workers=1, fake_settings=FakeSettings(invoice_finalize_delay_s=600)) as stack:
        cus, first, second = await play_story(stack)
        async with console(stack.database_url, stack.redis_url) as base:
            await run(lambda: sign_in(driver, base))
            # search by user id: the customer and its features now
            await run(lambda: driver.get(f"{base}/?q=u_story"))
            results = await run(lambda: driver.find_element(By.CSS_SELECTOR, "table.results tbody").text)
            assert cus in results
            assert "basic" in results
            assert "pro" in results
            await run(lambda: driver.find_element(By.LINK_TEXT, cus).click())
            await run(lambda: WebDriverWait(driver, 10).until(lambda b: b.find_elements(By.ID, "picture")))
            await run(lambda: shots(driver, "customer"))

            access = await run(lambda: driver.find_element(By.ID, "access-now").text)
            assert "basic" in access
            assert "pro" in access
            assert f"{second} is active" in access  # the why, in words

            rows = await run(lambda: rows_of(driver))
            assert [s for s, _x, _w in rows[first]] == ["trialing", "paused"]
            assert [s for s, _x, _w in rows[second]] == ["active", "past_due", "active"]
            assert [s for s, _x, _w in rows["basic"]] == ["feature", "feature"]  # none while paused
            assert [s for s, _x, _w in rows["pro"]] == ["feature"]
            paused, resubscribed = rows[first][1], rows[second][0]
            basic_bars, pro_bar = rows["basic"], rows["pro"][0]
            assert abs(basic_bars[0][1] + basic_bars[0][2] - paused[1]) < 1.5  # access ended when paused
            assert abs(basic_bars[1][1] - resubscribed[1]) < 1.5  # and came back with the new subscription
            assert pro_bar[1] > resubscribed[1]  # the upgrade came after
            past_due = rows[second][1]
            graces = await run(lambda: [float(g.get_attribute("x") or 0)
                                        for g in driver.find_elements(By.CSS_SELECTOR, "#picture rect.grace")])
            assert graces
            assert abs(graces[0] - past_due[1]) < 1.5
            marks = await run(lambda: [m.get_dom_attribute("href") or ""
                                       for m in driver.find_elements(By.CSS_SELECTOR, "#picture a.mark")])
            anchors = await run(lambda: {e.get_attribute("id") for e in driver.find_elements(By.CSS_SELECTOR,
                                                                                             ".timeline li")})
            linked = [m.rsplit("#", 1)[1] for m in marks]
            assert linked
            assert any(a in anchors for a in linked)

            # resync now: a new sync in the timeline
            before = await run(lambda: len(driver.find_elements(By.CSS_SELECTOR, ".timeline li.item-sync")))
            await run(lambda: driver.find_element(By.CSS_SELECTOR, "#resync button").click())
            await run(lambda: WebDriverWait(driver, 20).until(lambda b: "Synced just now" in b.page_source))
            after = await run(lambda: driver.execute_script(
                "return [...document.querySelectorAll('.timeline li.item-sync')].map(e => e.textContent);"))
            assert len(after) == before + 1
            assert "console.resync" in after[0]

            # a forged CSRF token is refused
            await run(lambda: driver.execute_script(
                "document.querySelector('#resync input[name=csrf]').value = 'forged';"))
            await run(lambda: driver.find_element(By.CSS_SELECTOR, "#resync button").click())
            await run(lambda: WebDriverWait(driver, 10).until(lambda b: "403" in b.title))
            assert "CSRF" in await run(lambda: driver.execute_script("return document.body.textContent;"))


async def test_overview_updates_live_and_a_missing_cookie_is_refused(
        database_url: str, redis_url: str, driver: WebDriver, shots: Callable[[WebDriver, str], Path]) -> None:
    async with console(database_url, redis_url) as base:
        await run(lambda: driver.get(f"{base}/overview"))
        assert "/console/sign-in" in await run(lambda: driver.current_url)  # no cookie: sign in first
        await run(lambda: sign_in(driver, base))
        await run(lambda: driver.get(f"{base}/overview"))
        asof = "return document.getElementById('fig-asof').textContent;"  # read at once: the part is replaced
        first = await run(lambda: driver.execute_script(asof))
        await run(lambda: driver.execute_script("window.stillTheSamePage = true;"))
        await run(lambda: WebDriverWait(driver, 15).until(
            lambda b: b.execute_script(asof) != first))
        assert await run(lambda: driver.execute_script("return window.stillTheSamePage === true;"))
        state = await run(lambda: driver.find_element(By.ID, "live-state").get_attribute("data-state"))
        assert state == "live"
        # the parts sent live link where the page's own did
        href = await run(lambda: driver.execute_script(
            "return document.querySelector('#fig-failed a').getAttribute('href');"))
        assert href == "/console/failed"
        await run(lambda: shots(driver, "overview"))
        # the cookie is gone (or expired: the browser drops it): back to the sign-in page
        await run(driver.delete_all_cookies)
        await run(lambda: driver.get(f"{base}/customers/cus_any"))
        assert "/console/sign-in" in await run(lambda: driver.current_url)
