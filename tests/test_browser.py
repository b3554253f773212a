"""The web page in headless Chromium: upload a real clip, see a transcript and the time taken.

Needs Debian's `chromium` and `chromium-driver` (scripts/setup.sh installs them) and selenium.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_serve import serving

from diffasr.serve import create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromium-driver are not installed")


def headless_chromium(profile: Path, *flags: str):
    """A selenium driver for headless Chromium with a fake microphone (a beep unless `flags` name a
    file for it) and its own profile folder; the caller quits it."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--user-data-dir={profile}",
        *flags,
    ]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture
def browser(tmp_path):
    driver = headless_chromium(tmp_path / "profile")
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def url(tiny_model):
    with serving(create_app(tiny_model)) as (base, _):
        yield base


def _open(browser, url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url + "/")
    wait = WebDriverWait(browser, 30)
    # the language list is filled from /health once the page has loaded
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#language option")) > 1)
    return wait


def _result(browser, wait) -> dict:
    """Wait for a transcript or an error; return what the result card shows."""
    from selenium.webdriver.common.by import By

    wait.until(
        lambda d: d.find_element(By.ID, "transcript").text.strip() or d.find_element(By.ID, "error").text.strip()
    )
    return {k: browser.find_element(By.ID, k).text for k in ("error", "transcript", "detected", "duration", "elapsed")}


def test_upload_through_the_page(url, en_clip, browser):
    from selenium.webdriver.common.by import By

    wait = _open(browser, url)
    browser.find_element(By.ID, "file").send_keys(str(en_clip))
    wait.until(lambda d: d.find_element(By.ID, "transcribe").is_enabled())
    browser.find_element(By.ID, "transcribe").click()
    shown = _result(browser, wait)
    assert shown["error"] == "" and shown["transcript"].strip() and shown["detected"]
    assert shown["duration"] == "11.0 s" and shown["elapsed"].endswith(" s")


def test_record_through_the_page(url, browser):
    """MediaRecorder (webm/opus from Chromium's fake microphone) -> upload -> transcript."""
    import time

    from selenium.webdriver.common.by import By

    wait = _open(browser, url)
    browser.find_element(By.ID, "record").click()
    wait.until(lambda d: "Stop" in d.find_element(By.ID, "record").text)
    time.sleep(1.5)
    browser.find_element(By.ID, "record").click()  # stopping uploads the recording
    shown = _result(browser, wait)
    assert shown["error"] == "" and shown["transcript"].strip() and shown["elapsed"].endswith(" s")
