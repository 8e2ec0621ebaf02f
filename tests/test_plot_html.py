"""The interactive map page in a real headless Chromium (Chrome DevTools protocol): it draws,
its own JavaScript throws nothing, hover shows time, price and USD by side, a drag zooms, and a
screenshot is taken. Chromium: Debian's ``chromium`` package (CI installs it in .ci/run)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from liqsignal.cli import main

ROOT = Path(__file__).resolve().parents[1]
TESTDATA = ROOT / "tests" / "testdata"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
    "--window-size=1500,950",
]


class Tab:
    """One page driven over the DevTools websocket; keeps every event it sees."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=None, open_timeout=20)
        self.n = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = json.loads(self.ws.recv(timeout=max(0.1, end - time.monotonic())))
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))
            self.events.append(msg)
        raise AssertionError(f"{method}: no answer in {timeout} s")

    def wait_event(self, method: str, timeout: float = 60) -> dict[str, Any]:
        for e in self.events:
            if e.get("method") == method:
                return e
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = json.loads(self.ws.recv(timeout=max(0.1, end - time.monotonic())))
            self.events.append(msg)
            if msg.get("method") == method:
                return msg
        raise AssertionError(f"no {method} in {timeout} s")

    def js(self, expr: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise AssertionError(f"{expr}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(json.dumps(p.get("exceptionDetails", {}))[:500])
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(json.dumps(p.get("args", []))[:500])
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(p["entry"].get("text", "")[:500])
        return out


@pytest.fixture
def chromium(tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail(
                "chromium is missing where CI must run this test (apt-get install chromium)"
            )
        pytest.skip("chromium is not installed here (apt-get install -y chromium)")
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        end = time.monotonic() + 60
        while not port_file.is_file() or not port_file.read_text().strip():
            assert proc.poll() is None, "chromium exited at start"
            assert time.monotonic() < end, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _open(port: int, url: str) -> Tab:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
    with urllib.request.urlopen(req, timeout=20) as r:
        target = json.loads(r.read())
    tab = Tab(target["webSocketDebuggerUrl"])
    for domain in ("Page", "Runtime", "Log"):
        tab.call(f"{domain}.enable")
    tab.call("Page.navigate", url=url)
    tab.wait_event("Page.loadEventFired", timeout=90)
    return tab


@pytest.mark.slow
def test_map_page_in_headless_chromium(chromium, tmp_path, capsys):
    page = tmp_path / "out" / "map.html"
    argv = ["map", "BTC", "--datadir", str(TESTDATA), "--exchange", "replay_binance"]
    argv += ["--no-buckets", "--out", str(tmp_path / "out"), "--html", str(page), "--json"]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["page"] == str(page) and page.stat().st_size > 1_000_000  # plotly.js inside
    tab = _open(chromium, page.as_uri())
    try:
        deadline = time.monotonic() + 60
        while not tab.js("!!document.querySelector('#liqmap .main-svg')"):
            assert time.monotonic() < deadline, "plotly drew nothing"
            time.sleep(0.2)
        kinds = tab.js("document.getElementById('liqmap').data.map(t => t.type)")
        assert kinds[:2] == ["heatmap", "candlestick"] and "bar" in kinds
        # hover over the middle of the heatmap: time, price row and USD per side
        box = tab.js(
            "(() => { const r = document.querySelector('#liqmap .nsewdrag')"
            ".getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()"
        )
        x0, y0, w, h = box

        def mouse(kind: str, fx: float, fy: float, **kw: object) -> None:
            """A mouse event at the share (fx, fy) of the heatmap's width and height."""
            tab.call("Input.dispatchMouseEvent", type=kind, x=x0 + w * fx, y=y0 + h * fy, **kw)

        found = ""
        for fx, fy in ((0.5, 0.5), (0.3, 0.4), (0.7, 0.6), (0.8, 0.5), (0.2, 0.6), (0.6, 0.3)):
            mouse("mouseMoved", fx, fy)
            time.sleep(0.4)
            found = tab.js(
                "Array.from(document.querySelectorAll('#liqmap .hoverlayer .hovertext'))"
                ".map(e => e.textContent).join(' | ')"
            )
            if "long" in found and "UTC" in found:
                break
        assert "UTC" in found and "price" in found and "long" in found and "short" in found, found
        # a drag on the heatmap zooms in time and price
        before = tab.js("document.getElementById('liqmap').layout.xaxis.range.slice()")
        mouse("mousePressed", 0.3, 0.3, button="left", clickCount=1)
        for k in range(1, 6):
            mouse("mouseMoved", 0.3 + 0.06 * k, 0.3 + 0.05 * k, button="left", buttons=1)
        mouse("mouseReleased", 0.6, 0.55, button="left", clickCount=1)
        time.sleep(0.8)
        after = tab.js("document.getElementById('liqmap').layout.xaxis.range.slice()")
        assert after != before, (before, after)
        shot = tab.call("Page.captureScreenshot", format="png")["data"]
        png = tmp_path / "screenshot.png"
        png.write_bytes(base64.b64decode(shot))
        from matplotlib.image import imread

        pixels = imread(png)
        assert pixels.shape[0] > 500 and pixels.shape[1] > 1000
        assert float(np.std(pixels[..., :3])) > 0.05, "a blank screenshot"
        assert tab.errors() == []
    finally:
        tab.ws.close()
