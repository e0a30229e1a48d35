"""The screenshot of docs/playground.md (`make playground-screenshot`): serves a run with launch/playground.py,
opens the page in Debian's headless chromium, types a sentence, generates it in a speaker's voice and saves
the page as a PNG. The run's own folder gets nothing (generations go to a temporary --save-dir).

    python scripts/playground_screenshot.py runs/demo --out docs/img/playground.png

`headless_chromium()` is also what the browser test drives: the system's chromedriver, named explicitly, so
Selenium Manager never downloads a driver, and no background networking.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
REPO = Path(__file__).resolve().parents[1]
FLAGS = ("--headless=new", "--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage",
         "--disable-gpu", "--disable-extensions", "--disable-sync", "--disable-component-update",
         "--disable-default-apps", "--no-first-run", "--metrics-recording-only")


def headless_chromium(width: int = 1280, height: int = 1800):
    """A selenium driver of the system's chromium (root needs --no-sandbox)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--window-size={width},{height}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, nargs="?", default=Path("runs/demo"))
    p.add_argument("--out", type=Path, default=Path("docs/img/playground.png"))
    p.add_argument("--text", default="ذهب الولد إلى المدرسة في الصباح الباكر.")
    a = p.parse_args()
    if not a.run.is_dir():
        sys.exit(f"error: {a.run} is not a run folder (playground-screenshot): run `make demo` first")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = _free_port()
    with tempfile.TemporaryDirectory() as save_dir:
        server = subprocess.Popen([sys.executable, str(REPO / "launch/playground.py"), str(a.run), "--port", str(port),
                                   "--save-dir", str(Path(save_dir) / "playground")],
                                  env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
        driver = None
        try:
            url, deadline = f"http://127.0.0.1:{port}/", time.monotonic() + 300
            while True:
                try:
                    urllib.request.urlopen(url, timeout=2).close()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        sys.exit("error: the playground did not start (its output is above)")
                    time.sleep(0.5)
            driver = headless_chromium()
            driver.get(url)
            wait = WebDriverWait(driver, 300, poll_frequency=0.5)
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#text textarea"))
            driver.find_element(By.CSS_SELECTOR, "#text textarea").send_keys(a.text)
            driver.find_element(By.CSS_SELECTOR, "#generate").click()
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#audio_a a[download]")
                       and "frames" in d.find_element(By.CSS_SELECTOR, "#info_a").text)
            time.sleep(2)  # the waveform and the spectrogram are drawn after the file arrives
            height = driver.execute_script("return document.body.scrollHeight")
            driver.set_window_size(1280, min(height + 200, 2600))  # the viewport is smaller than the window
            a.out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(a.out))
            print(f"wrote {a.out}")
        finally:
            if driver is not None:
                driver.quit()
            server.terminate()
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
