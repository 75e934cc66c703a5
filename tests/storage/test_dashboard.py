"""The dashboard: its JSON API, and the page in a real headless Chromium while a search runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

from hpsearch.dashboard import Dashboard
from hpsearch.storage import load_search

from . import searches
from .searches import GATE, Gated

def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no headless Chromium: install Debian's package (apt-get install -y chromium); .ci/run does")


def run_chromium(binary, *args, timeout=120):
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--hide-scrollbars", "--virtual-time-budget=4000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)


class Elements(HTMLParser):
    """Text by element id, and the attributes of every svg, from a dumped DOM."""

    def __init__(self):
        super().__init__()
        self.text, self.svgs, self.pres, self._open = {}, [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "svg":
            self.svgs.append(attrs)
        if "id" in attrs or tag == "pre":
            self._open.append((tag, attrs.get("id")))
            if attrs.get("id"):
                self.text[attrs["id"]] = ""
            if tag == "pre":
                self.pres.append("")

    def handle_endtag(self, tag):
        if self._open and self._open[-1][0] == tag:
            self._open.pop()

    def handle_data(self, data):
        for tag, ident in self._open:
            if ident:
                self.text[ident] += data
            if tag == "pre":
                self.pres[-1] += data


def committed(db):
    with sqlite3.connect(f"{Path(db).as_uri()}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]


def get(url):  # a URL or a Request
    with urllib.request.urlopen(url, timeout=30) as reply:
        return reply.status, reply.headers, reply.read()


def test_api_is_read_only_and_local(tmp_path):
    db = tmp_path / "search.db"
    with Dashboard(db) as dash:
        assert dash.url.startswith("http://127.0.0.1:")
        status, _, body = get(dash.url + "api/searches")
        assert json.loads(body)["searches"] == []  # no file yet: the page waits for it
        searches.search("grid", storage=db, name="g")
        listed = json.loads(get(dash.url + "api/searches")[2])["searches"]
        assert [s["name"] for s in listed] == ["g"] and listed[0]["status"] == "finished"
        detail = json.loads(get(dash.url + "api/search?name=g")[2])
        stored = load_search(db, "g")
        assert detail["tasks_done"] == stored.tasks_done == 48
        assert detail["best_score"] == stored.best["score"]
        assert json.loads(get(dash.url + "api/search?name=nope")[2])["error"].startswith("no search named")
        _, headers, page = get(dash.url)
        assert b"dashboard.js" in page and "default-src 'self'" in headers["Content-Security-Policy"]
        code = (page + get(dash.url + "static/dashboard.js")[2]).replace(b"http://www.w3.org/2000/svg", b"")
        assert not re.search(rb"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", code)  # loads nothing from elsewhere
        request = urllib.request.Request(dash.url + "api/searches", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=30)
        assert info.value.code == 501  # read-only: no method but GET and HEAD
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(dash.url + "../etc/passwd", timeout=30)
        assert info.value.code == 404
        rebound = urllib.request.Request(dash.url + "api/searches", headers={"Host": "attacker.example:80"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(rebound, timeout=30)
        assert info.value.code == 403  # a page elsewhere cannot read it through DNS rebinding
        local = urllib.request.Request(dash.url + "api/searches", headers={"Host": "localhost"})
        assert get(local)[0] == 200


@pytest.mark.slow
def test_page_in_headless_chromium_shows_a_running_search(tmp_path):
    browser = chromium()
    from PIL import Image

    db = tmp_path / "search.db"
    thread, errors = searches.start_gated_search(db, "gated")
    try:
        with Dashboard(db) as dash:
            shot = tmp_path / "dashboard.png"
            run_chromium(browser, "--window-size=1280,1900", f"--screenshot={shot}", dash.url)
            dom = run_chromium(browser, "--dump-dom", dash.url).stdout
        stored = load_search(db, "gated")
    finally:
        GATE.set()
        thread.join(120)
    assert not thread.is_alive() and not errors, errors

    page = Elements()
    page.feed(dom)
    assert stored.status == "running" and page.text["status"] == "running"
    assert int(page.text["candidates-done"]) == stored.candidates_done == 15
    assert int(page.text["candidates-total"]) == stored.total == 16
    assert int(page.text["tasks-done"]) == stored.tasks_done == 45
    assert int(page.text["tasks-total"]) == stored.tasks_total == 48
    assert int(page.text["n-failures"]) == len(stored.failures) == 6
    assert int(page.text["n-workers"]) == 1
    best = stored.best
    assert float(page.text["best-score"]) == pytest.approx(best["score"], abs=5e-5)
    assert json.loads(page.text["best-params"]) == best["params"]
    scored = sum(1 for c in stored.candidates if c["score"] is not None)
    counts = [int(svg["data-count"]) for svg in page.svgs]
    # best over time, one scatter per parameter (n, x), parallel coordinates, the timeline
    assert counts == [scored, scored, scored, scored, 45]
    assert [svg.get("data-param") for svg in page.svgs[1:3]] == ["n", "x"]
    assert len(page.pres) == 6 and all("ValueError: boom: x=0.9" in p for p in page.pres)

    image = Image.open(shot).convert("RGB")
    colors = image.getcolors(maxcolors=1 << 20)
    pixels = {rgb: n for n, rgb in colors}
    assert pixels.get((0x3E, 0xBD, 0x93), 0) > 500  # the timeline's fits
    assert pixels.get((0xE1, 0x2D, 0x39), 0) > 20  # its failed fits (quick: narrow bars)
    assert pixels.get((0x2F, 0x80, 0xED), 0) > 100  # the best-score line (and the progress bar)
    keep = os.environ.get("HPSEARCH_TEST_SCREENSHOT_DIR")
    if keep:  # to look at it
        shutil.copy(shot, Path(keep) / "dashboard.png")
