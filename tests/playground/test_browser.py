"""The playground in a real browser: Debian's chromium, driven by selenium through its own chromedriver
(`Service('/usr/bin/chromedriver')`: Selenium Manager never downloads anything), on a tiny two-checkpoint run
whose codec decodes (the shipped demo DAC). Typed Arabic, a picked speaker, the wav behind the player, a
checkpoint switch, A/B, an empty text and a checkpoint deleted while the page is open."""

from __future__ import annotations

import importlib.util
import io
import re
import shutil
import urllib.request

import numpy as np
import pytest
import soundfile

from scripts.playground_screenshot import CHROMEDRIVER, CHROMIUM, headless_chromium
from tests.data.synthetic import write_synthetic_split
from tests.harness import checked, finish, free_port, start_train

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                 reason="needs Debian's chromium and chromium-driver (make setup installs them)"),
              pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("gradio", "selenium")),
                                 reason="needs gradio and selenium (make setup installs them)")]
FRAME_LIMIT = 30  # what the page asks for by default here: 30 delay-pattern columns, 23 codec frames (K = 8)


@pytest.fixture(scope="module")
def training(tmp_path_factory, tokenizer_dir):
    """Started, not awaited: two complete tags (steps 1 and 2) of a tiny model on random codes under the
    shipped demo codec's spec, with an eval split whose speakers the page offers. The browser starts and
    gradio is imported while it trains."""
    from higgs_ds.codec import CodecConfig, load_codec
    from higgs_ds.data.demo import shipped_demo_codec

    codec = load_codec(CodecConfig(path=str(shipped_demo_codec()), kind="dac", device="cpu"))
    root = tmp_path_factory.mktemp("browser")
    write_synthetic_split(root / "train", num_shards=1, per_shard=4, seed=3, spec=codec.spec)
    write_synthetic_split(root / "eval", num_shards=1, per_shard=3, seed=4, spec=codec.spec)
    data = {"train": root / "train", "eval": root / "eval", "tokenizer": tokenizer_dir}
    proc = start_train(root / "run", data, "steps=2", "save_every=1", "keep_last=2", "eval_every=0",
                       "predict_every=0", "log_every=1", "optim.warmup_steps=1", "optim.lr=1e-2", ranks=1,
                       with_eval=True)
    yield proc, root / "run", codec
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def browser(training):
    driver = headless_chromium()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(training, browser):
    """launch/playground.py's own argument parsing, checks and server (`serve`), in this process."""
    from launch import playground as cli

    proc, run, codec = training
    checked(finish(proc, timeout=300))
    port = free_port()
    args = cli._parse([str(run), "--port", str(port), "--no-score", "--frame-limit", str(FRAME_LIMIT), "--device",
                       "cpu"])
    app = cli.serve(cli.build(args), args, block=False)
    yield f"http://127.0.0.1:{port}/", run, codec
    app.close()


def _wait(driver, condition, timeout: float = 60):
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    # gradio re-renders components after the first paint (the tag list, the speakers): an element gone
    # or not there yet mid-check is asked again, not a failure
    waiting = WebDriverWait(driver, timeout, poll_frequency=0.2,
                            ignored_exceptions=(StaleElementReferenceException, IndexError))
    try:
        return waiting.until(lambda d: condition(d) or None)
    except TimeoutException:
        raise AssertionError(f"the page did not get there in {timeout} s; its status: {_status(driver)!r}") from None


def _css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def _status(driver) -> str:
    return " ".join(e.text for e in _css(driver, "#status"))


def _generate(driver, button: str = "#generate", side: str = "a") -> tuple[str, str]:
    """Click, wait for the new wav behind the player; returns (its url, the status line)."""
    old = [a.get_attribute("href") for a in _css(driver, f"#audio_{side} a[download]")]
    before = _status(driver)
    _css(driver, button)[0].click()
    href = _wait(driver, lambda d: next((h for h in (a.get_attribute("href") for a in _css(d, f"#audio_{side} "
                                                                                            "a[download]"))
                                         if h and h not in old), None))
    _wait(driver, lambda d: _status(d) != before and "frames" in _status(d))
    return href, _status(driver)


def _wav(url: str) -> tuple[np.ndarray, int]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return soundfile.read(io.BytesIO(response.read()), dtype="float32")


def test_the_page_generates_switches_compares_and_reports_bad_input(server, browser):
    from selenium.webdriver.common.keys import Keys

    url, tiny_run, codec = server
    hop = int(codec.spec.samples_per_frame)
    browser.get(url)
    text = _wait(browser, lambda d: _css(d, "#text textarea"))[0]
    _wait(browser, lambda d: [e.get_attribute("value") for e in _css(d, "#tag input")] == ["step000001", "step000002"])
    _wait(browser, lambda d: _css(d, "#tag input:checked")[0].get_attribute("value") == "step000002")  # the latest
    text.send_keys("مرحبا بكم، كيف الحال?")
    _wait(browser, lambda d: _css(d, "#normalised textarea")[0].get_attribute("value") == "مرحبا بكم، كيف الحال؟")
    assert text.value_of_css_property("direction") == "rtl"

    speaker = _css(browser, "#speaker input")[0]  # a speaker of the eval shards: its clip is the reference
    first = speaker.get_attribute("value")
    speaker.click()
    options = _wait(browser, lambda d: [o for o in _css(d, "ul li.item") if o.text and first not in o.text])
    picked = options[0].text
    options[0].click()
    _wait(browser, lambda d: _css(d, "#speaker input")[0].get_attribute("value") == picked)

    href, status = _generate(browser)
    frames = int(re.search(r"step000002: (\d+) frames", status)[1])
    wav, rate = _wav(href)
    assert rate == codec.sample_rate and len(wav) == frames * hop and frames == FRAME_LIMIT - 7
    saved = sorted((tiny_run / "playground").glob("2*"))
    assert len(saved) == 1 and soundfile.info(saved[0] / "out.wav").frames == len(wav)
    assert f'"speaker": "{picked}"' in (saved[0] / "settings.json").read_text(encoding="utf-8")

    _css(browser, "#tag input[value='step000001']")[0].click()  # switching loads that checkpoint
    _wait(browser, lambda d: "loaded step000001" in _status(d))
    href_1, status_1 = _generate(browser)
    wav_1, _ = _wav(href_1)
    assert status_1.startswith("step000001:") and len(wav_1) == len(wav) and not np.array_equal(wav_1, wav)
    codes = [np.load(p / "codes.npy") for p in sorted((tiny_run / "playground").glob("2*"))]
    assert not np.array_equal(codes[0], codes[1])  # the other checkpoint's codes, not just other audio

    _css(browser, "#tag_b input[value='step000002']")[0].click()  # A/B: the same text and voice, both tags
    href_a, status_ab = _generate(browser, "#generate_ab", side="b")
    assert "step000001:" in status_ab and "step000002:" in status_ab
    assert np.array_equal(_wav(href_a)[0], wav)  # greedy: B reproduces the first generation

    text.send_keys(Keys.CONTROL, "a")
    text.send_keys(Keys.DELETE)  # as a user empties it (clear() sends no input event)
    _wait(browser, lambda d: _css(d, "#normalised textarea")[0].get_attribute("value") == "")
    _css(browser, "#generate")[0].click()
    _wait(browser, lambda d: _status(d).startswith("error: the text '' is empty once normalised (text)"))
    assert not _css(browser, "#audio_a a[download]")  # no stale output beside an error

    shutil.rmtree(tiny_run / "checkpoints" / "step000001")  # deleted while the page shows it
    text.send_keys("مرحبا")
    _css(browser, "#generate")[0].click()
    _wait(browser, lambda d: "error: checkpoint 'step000001' is not (or no longer) a complete tag" in _status(d))
    _css(browser, "#tag input[value='step000002']")[0].click()
    _wait(browser, lambda d: "loaded step000002" in _status(d))
    assert _generate(browser)[1].startswith("step000002:")  # the server kept serving
