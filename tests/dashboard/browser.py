"""A real headless Chromium for tests: Debian's ``chromium`` driven by ``chromium-driver``.

``.ci/run`` installs both with apt-get; where they are missing, callers skip with
:func:`missing_browser`'s reason. Selenium is given both binaries, so it downloads nothing.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mycelium.procs import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1440,1000",
)


def missing_browser() -> str | None:
    """Why no browser test can run here, or None when one can."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if shutil.which(path) is None:
            return f"no browser: {path} is missing (Debian package {package}; .ci/run installs it)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "no browser driver: selenium is not installed (pip install -r requirements-dev.txt)"
    return None


@contextmanager
def chromium(*, extra_flags: tuple[str, ...] = ()) -> Iterator[Any]:
    """A Selenium WebDriver on a headless Chromium with a fresh profile; quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="mycelium-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, *extra_flags, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
        try:
            driver.set_page_load_timeout(30)
            driver.set_script_timeout(30)
            yield driver
        finally:
            driver.quit()


def until(driver: Any, script: str, *, timeout: float, what: str) -> Any:
    """Poll a JavaScript expression in the page until it is truthy; return its value."""

    def check() -> Any:
        return driver.execute_script(f"return ({script});") or None

    return wait_for(check, timeout=timeout, interval=0.1, what=what)


def console_problems(driver: Any) -> list[str]:
    """Console errors of the page so far: script errors, CSP violations, failed loads."""
    entries = driver.get_log("browser")
    return [
        e["message"]
        for e in entries
        if e["level"] == "SEVERE" or "Content Security Policy" in e["message"]
    ]


def save_screenshot(driver: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(path)):
        raise AssertionError(f"screenshot not written to {path}")
    return path


def click_node(driver: Any, node_id: int) -> None:
    """A real mouse click on a node drawn on the map's canvas."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    until(driver, "!window.myceliumDashboard.moving()",
          timeout=10, what="the map to stop moving")  # fmt: skip
    x, y, w, h = driver.execute_script(
        f"const n = window.myceliumDashboard.cy.getElementById('n{node_id}');"
        "const p = n.renderedPosition(); const box = document.getElementById('map');"
        "return [p.x, p.y, box.clientWidth, box.clientHeight];"
    )
    box = driver.find_element(By.ID, "map")
    ActionChains(driver).move_to_element_with_offset(
        box, int(x - w / 2), int(y - h / 2)
    ).click().perform()
