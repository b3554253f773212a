"""The web page in headless Chromium: upload a real clip, see a transcript and the time taken.

Needs Debian's `chromium` and `chromium-driver` (scripts/setup.sh installs them) and selenium.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_serve import serving

from diffasr.serving.serve import create_app

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


@pytest.fixture(scope="module")
def base_url(shipped_base):
    with serving(create_app(shipped_base)) as (base, _):
        yield base


def test_steps_and_words_on_the_page(base_url, en_clip, tmp_path):
    """The shipped default transcribes a real clip with its steps shown: one strip row per step
    (the last one's kept tokens spell the transcript), the words on the waveform, a word plays its
    span when clicked. The screenshot goes to $DIFFASR_SCREENSHOT (docs/web_steps.png) or tmp_path."""
    import os
    import time

    from selenium.webdriver.common.by import By

    driver = headless_chromium(tmp_path / "profile", "--autoplay-policy=no-user-gesture-required")
    try:
        driver.set_window_size(1200, 2400)  # room for the whole result card in the screenshot
        wait = _open(driver, base_url)
        assert driver.find_element(By.ID, "show-steps").is_selected()
        driver.find_element(By.ID, "file").send_keys(str(en_clip))
        wait.until(lambda d: d.find_element(By.ID, "transcribe").is_enabled())
        driver.find_element(By.ID, "transcribe").click()
        shown = _result(driver, wait)
        assert shown["error"] == "" and "ask not what your country" in shown["transcript"].lower()
        wait.until(lambda d: d.find_element(By.ID, "strip").get_attribute("data-done") == "1")
        wait.until(lambda d: int(d.find_element(By.ID, "wave").get_attribute("data-words") or 0) > 0)
        rows = driver.find_elements(By.CSS_SELECTOR, "#strip .step-row")
        assert len(rows) >= 2 and rows[0].get_attribute("data-step") == "0"
        last = rows[-1].find_elements(By.CSS_SELECTOR, ".tok.kept")
        kept = "".join(t.get_attribute("textContent") for t in last).replace("\u00a0", " ").replace("⏎", "")
        assert " ".join(kept.split()) == " ".join(shown["transcript"].split())
        assert driver.find_elements(By.CSS_SELECTOR, "#wave path.wave")  # the clip's envelope was drawn
        words = driver.find_elements(By.CSS_SELECTOR, "#wave .word")
        assert len(words) == int(driver.find_element(By.ID, "wave").get_attribute("data-words"))
        shot = Path(os.environ.get("DIFFASR_SCREENSHOT") or tmp_path / "web_steps.png")
        driver.find_element(By.ID, "result").screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        word = words[len(words) // 2]
        start, end = float(word.get_attribute("data-start")), float(word.get_attribute("data-end"))
        driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", word)
        time.sleep(0.3)
        t = driver.execute_script("return document.getElementById('preview').currentTime")
        assert start - 0.05 <= t <= end + 0.3
    finally:
        driver.quit()
