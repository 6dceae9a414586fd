"""The web page in real headless Chromium: record from a (fake) microphone, choose a file,
stream live; each sends audio to a server on 127.0.0.1 and shows the right label.

Chromium's fake microphone plays a WAV file in a loop. Needs Debian's ``chromium`` and
``chromium-driver`` (CI installs them) and the ``selenium`` package.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import synth
from conftest import running_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip("chromium and chromedriver are not installed (apt-get install chromium "
                "chromium-driver)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
pytest.importorskip("fastapi", reason="the serve extra is not installed")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tympan.models.modelfile import load_model  # noqa: E402
from tympan.serve.app import create_app  # noqa: E402

#: Set to a path to keep a screenshot of the page showing a timeline (the README's picture).
SCREENSHOT_ENV = "TYMPAN_SERVE_SCREENSHOT"


@pytest.fixture(scope="module")
def page(trained_model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Chromium on the served page, its fake microphone playing a 1 kHz tone (48 kHz WAV)."""
    mic = synth.write(tmp_path_factory.mktemp("mic") / "tone.wav",
                      synth.tone(1000, 4.0, 48000, amplitude=0.4), 48000)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={mic}", "--window-size=1000,1250",
                 "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(flag)
    app = create_app(load_model(trained_model_file))
    with running_server(app) as url:
        driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER),
                                  options=options)
        try:
            driver.get(url + "/")
            WebDriverWait(driver, 30).until(
                lambda d: "classes" in d.find_element(By.ID, "model-info").text)
            yield driver
        finally:
            driver.quit()


def _wait_text(driver: Any, element_id: str, predicate: Any, timeout: float = 30) -> str:
    WebDriverWait(driver, timeout).until(
        lambda d: predicate(d.find_element(By.ID, element_id).text))
    return str(driver.find_element(By.ID, element_id).text)


def test_the_page_shows_the_model(page: Any) -> None:
    info = page.find_element(By.ID, "model-info").text
    assert "cnn-s" in info and "3 classes" in info and "16 kHz" in info


def test_record_from_the_microphone_and_see_the_label(page: Any) -> None:
    import time

    record = page.find_element(By.ID, "record")
    record.click()
    _wait_text(page, "status", lambda t: t.startswith("recording"))
    assert "webm" in page.find_element(By.ID, "status").text  # Chromium records WebM/Opus
    time.sleep(2.0)
    record.click()
    status = _wait_text(page, "status", lambda t: t.startswith("recording.webm:"))
    assert page.find_element(By.ID, "top-label").text == "tone", status
    assert "webm" in status and "48000 Hz" in status
    bars = page.find_elements(By.CSS_SELECTOR, "#bars .bar")
    assert [b.get_attribute("data-label") for b in bars][0] == "tone" and len(bars) == 3
    assert page.execute_script(  # the spectrogram canvas was painted
        "const c = document.getElementById('spectrogram').getContext('2d');"
        "return Array.from(c.getImageData(0, 0, 800, 160).data)"
        ".some((v, i) => i % 4 < 3 && v > 60);")


def test_choose_a_long_file_and_see_the_event_timeline(page: Any, tmp_path: Path) -> None:
    rate = 44100
    clip = np.concatenate([synth.noise_burst(2.0, rate, seed=5), synth.tone(1000, 2.0, rate),
                           synth.noise_burst(1.0, rate, amplitude=0.0)])
    path = synth.write(tmp_path / "noise-then-tone.flac", clip, rate)
    page.find_element(By.ID, "file-input").send_keys(str(path))
    _wait_text(page, "status", lambda t: t.startswith("noise-then-tone.flac:"))
    events = page.find_element(By.ID, "events").text
    assert "noise" in events and "tone" in events
    assert page.find_element(By.ID, "timeline-box").is_displayed()
    shot = tmp_path / "serve-page.png"
    page.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(shot, os.environ[SCREENSHOT_ENV])


def test_live_mode_streams_the_microphone(page: Any) -> None:
    live = page.find_element(By.ID, "live")
    live.click()
    try:
        _wait_text(page, "status", lambda t: t.startswith("live: tone"), timeout=30)
        assert "Live timeline" in page.find_element(By.ID, "timeline-title").text
    finally:
        live.click()
    _wait_text(page, "status", lambda t: t == "live stopped")
