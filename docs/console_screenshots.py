"""Takes the README's two console screenshots from `entitled run`'s demo data:
`python docs/console_screenshots.py` (needs chromium and chromium-driver, as the browser tests).

It starts `entitled run` with nothing configured (embedded Postgres and Redis, the fake Stripe),
reads the console's address and token from what it prints, waits for the demo to end, then signs
in with headless Chromium and saves docs/console-customer.png and docs/console-overview.png.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

DOCS = Path(__file__).resolve().parent


def main() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DATABASE_", "REDIS_", "API_"))}
    with tempfile.TemporaryDirectory() as folder:
        proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "run"], cwd=folder, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        said: list[str] = []

        def read(stream: object) -> None:
            for line in stream:  # type: ignore[attr-defined]
                said.append(line)

        for stream in (proc.stdout, proc.stderr):
            threading.Thread(target=read, args=(stream,), daemon=True).start()
        try:
            deadline = time.monotonic() + 300
            while not any("Demo done" in line for line in said):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the demo did not finish:\n" + "".join(said[-40:]))
                time.sleep(1)
            text = "".join(said)
            found = re.search(r"operator console on (http://\S+/console/) \(sign in with (\S+)\)", text)
            if found is None:
                raise SystemExit("the demo printed no console address")
            shoot(found.group(1), found.group(2))
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)


def shoot(base: str, secret: str) -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        browser.get(base + "sign-in")
        browser.find_element(By.NAME, "secret").send_keys(secret)
        browser.find_element(By.CSS_SELECTOR, "#sign-in button").click()
        WebDriverWait(browser, 10).until(lambda b: "signed in as" in b.page_source)
        browser.get(base + "overview")
        WebDriverWait(browser, 10).until(
            lambda b: b.find_element(By.ID, "live-state").get_attribute("data-state") == "live")
        browser.save_screenshot(str(DOCS / "console-overview.png"))
        # the customer whose picture has the most rows: the demo's richest story
        customers: list[str] = browser.execute_script(
            "return [...document.querySelectorAll('#latest a')].map(a => a.getAttribute('href'));")
        print("customers:", customers)
        best, most = customers[0], -1
        for href in sorted(set(customers)):
            browser.get(base.removesuffix("/console/") + href)
            count = len(browser.find_elements(By.CSS_SELECTOR, "#picture g.row"))
            if count > most:
                best, most = href, count
        browser.get(base.removesuffix("/console/") + best)
        browser.save_screenshot(str(DOCS / "console-customer.png"))
    finally:
        browser.quit()


if __name__ == "__main__":
    main()
