"""The live web page in a real browser: headless Chromium driven over the DevTools
protocol (--remote-debugging-pipe: no websocket client, no Playwright), against the
running demo. A screenshot of the page is kept as a test artifact, in
$SELD_TEST_ARTIFACTS when set, else in pytest's base temporary folder."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from test_live import LoudnessEngine, tone_file

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(name)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="Chromium is not installed (apt-get install chromium)")


class Chromium:
    """Headless Chromium; `call` sends one DevTools command and returns its result."""

    def __init__(self, width: int = 1280, height: int = 720):
        self.profile = tempfile.mkdtemp(prefix="seld-chromium-")
        command_read, self.command_write = os.pipe()
        self.reply_read, reply_write = os.pipe()
        # DevTools reads commands on fd 3 and writes replies on fd 4, NUL-separated JSON.
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{command_read} 4>&{reply_write}', BROWSER,
             "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--remote-debugging-pipe", f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
             "about:blank"],
            pass_fds=(command_read, reply_write), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(command_read)
        os.close(reply_write)
        self.next_id = 0
        self.pending = b""
        self.session: str | None = None

    def call(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self.command_write, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self.pending:
                chunk = os.read(self.reply_read, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"Chromium exited: {self.process.stderr.read().decode()[-800:]}")
                self.pending += chunk
            raw, self.pending = self.pending.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", {"url": url}, session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15.0):
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"the page never satisfied {expression!r} (last value {value!r})")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.call("Browser.close", session=False)
            self.process.wait(timeout=10)
        except Exception:  # already gone
            self.process.kill()
            self.process.wait(timeout=10)
        for descriptor in (self.command_write, self.reply_read):
            os.close(descriptor)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def chromium():
    browser = Chromium()
    yield browser
    browser.close()


@pytest.fixture
def artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("SELD_TEST_ARTIFACTS") or tmp_path_factory.getbasetemp() / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


SOURCES = "Array.from(document.querySelectorAll('#sources li.source')).map(li => li.textContent).join('\\n')"


def test_web_page_shows_the_live_source(chromium, artifacts, tmp_path):
    """The page of a running demo (a recording of a tone on channel 2, through the stand-in
    engine) lists the source at azimuth 90 and draws it, with live stats."""
    from seld.realtime.capture import FileSource
    from seld.realtime.live import run_live
    from seld.realtime.web import WebView

    path = tmp_path / "in.wav"
    tone_file(path, 24_000, 4, loud_channel=1, seconds=5, onset_s=1.0)
    web = WebView(0, {"model": "stand-in", "class_names": ["tone", "speech", "clap"], "has_distance": False,
                      "source": str(path)})
    runner = threading.Thread(target=run_live, args=(LoudnessEngine(), FileSource(path, 4, None), [web]), daemon=True)
    runner.start()
    try:
        chromium.open(web.url)
        text = chromium.wait_for(SOURCES)
        assert "tone" in text and "az 90°" in text
        assert chromium.evaluate("document.getElementById('status').textContent") == "live"
        assert "StandInExecutionProvider" in chromium.evaluate("document.getElementById('stats').textContent")
        time.sleep(1.0)  # a second of timeline
        shot = chromium.screenshot(artifacts / "live_web_stand_in.png")
        assert shot.stat().st_size > 10_000
        # The polar view drew something in the source's colour near the left edge (azimuth +90).
        lit = chromium.evaluate("""(() => {
            const c = document.getElementById('polar'), g = c.getContext('2d');
            const d = g.getImageData(0, c.height / 2 - 20, c.width / 4, 40).data;
            let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 120 && d[i + 1] < 110) n++;
            return n; })()""")
        assert lit > 50
    finally:
        runner.join(timeout=15)
    assert not runner.is_alive()
    # The run ended: said so in plain (not failure) colour, and its last sources are gone.
    chromium.wait_for("document.getElementById('status').textContent.startsWith('end of')")
    assert chromium.evaluate("document.getElementById('status').className") == "ended"
    assert chromium.evaluate(SOURCES) == ""
    print(f"\nscreenshot: {shot}")


def frame_message(frame: int, class_index: int, elapsed_s: float) -> tuple[dict, dict]:
    event = {"class": class_index, "class_name": "x", "track": 0, "azimuth": 30.0, "elevation": 0.0,
             "distance_m": None, "confidence": 0.9}
    return ({"frame": frame, "time_s": frame / 10, "events": [event]},
            {"elapsed_s": elapsed_s, "latency_ms": 1.0, "latency_p99_ms": 1.0, "overflows": 0, "provider": "cpu"})


def test_web_page_starts_afresh_on_a_new_run_and_fits_a_phone(chromium, artifacts):
    """A run killed without its end event, then another on the same port: the page reconnects and
    shows the new run's model and only its frames; a lost connection shows no stale sources; at
    375 px the page needs no sideways scrolling."""
    from seld.realtime.web import WebView

    first = WebView(0, {"model": "first-model", "class_names": ["a", "b"], "has_distance": False})
    port = first.server.server_address[1]
    try:
        chromium.open(first.url)
        chromium.call("Emulation.setDeviceMetricsOverride", {"width": 375, "height": 800, "deviceScaleFactor": 1,
                                                              "mobile": True})
        chromium.wait_for("document.getElementById('status').textContent === 'live'")
        for frame in range(20):
            first.frame(*frame_message(frame, 0, 5.0 + frame / 10))
        chromium.wait_for("document.body.dataset.frame === '19'")
        assert chromium.evaluate("columns.length") == 20
        assert chromium.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        chromium.screenshot(artifacts / "live_web_375px.png")
    finally:  # killed: its connections drop without an end event
        with first.clients_lock:
            for mailbox in first.clients:
                mailbox.put(None)
        first.server.shutdown()
        first.server.server_close()
    chromium.wait_for("document.getElementById('status').textContent === 'disconnected'")
    assert chromium.evaluate(SOURCES) == ""
    second = WebView(port, {"model": "second-model", "class_names": ["c", "d", "e"], "has_distance": False})
    try:
        chromium.wait_for("document.getElementById('status').textContent === 'live'")  # EventSource retried
        # Known before its first frame (a silent input sends none): the new run's model, an empty timeline
        chromium.wait_for("document.getElementById('model').textContent.startsWith('second-model')")
        assert chromium.evaluate("columns.length") == 0
        for frame in range(3):
            second.frame(*frame_message(frame, 2, 0.5 + frame / 10))
        chromium.wait_for("document.body.dataset.frame === '2'")
        assert chromium.evaluate("columns.length") == 3
        assert chromium.evaluate("info.class_names.join()") == "c,d,e"
    finally:
        second.close({"elapsed_s": 1.0, "ending": "stopped"})
