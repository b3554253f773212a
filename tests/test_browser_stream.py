"""The web page's Live button in headless Chromium: a fake microphone plays a real clip, the page
streams it over /v1/stream and shows partials (grey) that turn into a final (black) close to the
batch transcript of the same audio. Shipped model; needs chromium, chromium-driver and selenium."""

from __future__ import annotations

import time

import numpy as np
import pytest
import soundfile as sf
from test_browser import CHROMIUM, DRIVER, headless_chromium
from test_serve import serving

from diffasr.audio import SAMPLE_RATE, load_audio
from diffasr.metrics import error_rate
from diffasr.serving.serve import create_app

pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromium-driver are not installed")


@pytest.fixture
def mic_wav(tmp_path, en_clip):
    """jfk.flac's first 2.5 s ("and so my fellow americans") then 2.5 s of silence, 16-bit PCM."""
    a = load_audio(en_clip)[: int(2.5 * SAMPLE_RATE)]
    a = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), a, np.zeros(int(2.5 * SAMPLE_RATE), np.float32)])
    path = tmp_path / "mic.wav"
    sf.write(path, a, SAMPLE_RATE, subtype="PCM_16")
    return path, a


@pytest.fixture
def browser(tmp_path, mic_wav):
    driver = headless_chromium(
        tmp_path / "profile",
        f"--use-file-for-fake-audio-capture={mic_wav[0]}",  # the microphone plays the clip (looped)
        "--autoplay-policy=no-user-gesture-required",
    )
    yield driver
    driver.quit()


def test_live_microphone(shipped_model, browser, mic_wav):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with serving(create_app(shipped_model)) as (url, _):
        browser.get(url + "/")
        wait = WebDriverWait(browser, 60, poll_frequency=0.05)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#language option")) > 1)
        browser.find_element(By.ID, "live-button").click()
        partials, levels, t0 = [], set(), time.monotonic()
        while not browser.find_elements(By.CSS_SELECTOR, "#finals .final") and time.monotonic() - t0 < 60:
            assert browser.find_element(By.ID, "error").text == ""
            p = browser.find_element(By.ID, "partial").text
            if p and (not partials or partials[-1] != p):
                partials.append(p)
            levels.add(browser.find_element(By.ID, "level").get_attribute("style"))
            time.sleep(0.05)
        finals = browser.find_elements(By.CSS_SELECTOR, "#finals .final")
        assert finals, "no final within 60 s"
        final = finals[0]
        text = final.get_attribute("textContent").strip()
        assert final.value_of_css_property("color") == "rgba(29, 35, 43, 1)"  # --fg: black
        assert browser.find_element(By.ID, "partial").value_of_css_property("color") == "rgba(106, 115, 128, 1)"  # grey
        rows = browser.find_elements(By.CSS_SELECTOR, "#live-strip .step-row")  # the final's denoising steps
        assert rows and rows[0].find_elements(By.CSS_SELECTOR, ".tok")
        browser.find_element(By.ID, "live-button").click()  # stop
    assert partials, "no partial before the final"
    assert len(levels) > 2  # the level meter moved
    batch = shipped_model.transcribe(mic_wav[1]).text
    wer, _ = error_rate([batch], [text], "en")
    assert wer <= 0.35 and "americans" in text, (batch, text, partials)
