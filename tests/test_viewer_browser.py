"""The web page and the local Neuroglancer in headless Chromium (Debian's ``chromium``).

A diced server on loopback serves a small repo (a uint8 image with a gradient and blobs, a
label array of a dozen segments, a keyvalue; versions with a branch, a tag and a merge). The
browser is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: no
websocket library needed) and every check reads pixels of real screenshots: slice pixels are
compared with the array values at the voxels they show, label colours with label identity.
Chromium resolves no host but 127.0.0.1, so the page and Neuroglancer must work offline.

Set ``DICED_VIEWER_SCREENSHOTS=<dir>`` to keep the screenshots (docs/img/ holds two of them).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
Image = pytest.importorskip("PIL.Image")

import diced
from diced.server import viewer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason="headless browser tests need Debian's chromium package "
                              "(apt-get install -y chromium), which is not installed"),
]
WIDTH, HEIGHT = 1400, 900
LONG = 430  # versions in the second repo: more than the DAG drawing shows (dag.js MAX_NODES)
SHOTS = os.environ.get("DICED_VIEWER_SCREENSHOTS")


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4)."""

    def __init__(self, binary: str = CHROMIUM, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._id = 0
        self._buf = b""
        self.profile = tempfile.TemporaryDirectory(prefix="diced-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        args = [binary, "--headless", "--no-sandbox", "--disable-gpu",
                "--enable-unsafe-swiftshader", "--use-angle=swiftshader",  # WebGL for Neuroglancer
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions",
                "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                f"--user-data-dir={self.profile.name}", f"--window-size={WIDTH},{HEIGHT}",
                "--remote-debugging-pipe", "about:blank"]
        # chromium reads commands on fd 3 and answers on fd 4: the shell puts the pipes there
        # (from numbers above 4, so that moving one does not close the other)
        r, w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_child_r, from_child_w))
        shell = f'exec "$0" "$@" 3<&{r} 4>&{w} {r}<&- {w}>&-'
        self.proc = subprocess.Popen(["bash", "-c", shell, *args], pass_fds=(r, w),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        for fd in (to_child_r, from_child_w, r, w):
            os.close(fd)
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target,
                                     flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Network"):
                self.call(f"{domain}.enable", session=True)
            # Neuroglancer fetches chunks from a web worker: watch the network there too
            self.call("Target.setAutoAttach", session=True, autoAttach=True,
                      waitForDebuggerOnStart=True, flatten=True)
            self.call("Emulation.setDeviceMetricsOverride", session=True, width=WIDTH,
                      height=HEIGHT, deviceScaleFactor=1, mobile=False)
        except Exception:
            self.close()
            raise

    def _read(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer")
            if select.select([self._from_child], [], [], left)[0]:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        got = json.loads(msg)
        if got.get("method") == "Target.attachedToTarget":  # a worker, paused at its start
            worker = got["params"]["sessionId"]
            self._send("Network.enable", worker)
            self._send("Runtime.runIfWaitingForDebugger", worker)
        return got

    def _send(self, method: str, session: str | None, **params: Any) -> int:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        return self._id

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        sent = self._send(method, self.session if session else None, **params)
        while True:
            got = self._read()
            if got.get("id") == sent:
                if "error" in got:
                    raise RuntimeError(f"{method}: {got['error']}")
                return got.get("result", {})
            self.events.append(got)

    def js(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", session=True, expression=expression,
                        returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", session=True, url="about:blank")
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)

    def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.js(expression)
            except RuntimeError as exc:  # e.g. the document is still being replaced
                value = str(exc)[:300]
            else:
                if value:
                    return value
            time.sleep(0.2)
        raise AssertionError(f"waited {timeout} s for {expression!r}; last value {value!r}; "
                             f"page errors: {self.errors()}")

    def mouse(self, kind: str, x: float, y: float) -> None:
        extra = {"button": "left", "clickCount": 1} if kind != "mouseMoved" else {}
        self.call("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y, **extra)

    def click(self, x: float, y: float) -> None:
        self.mouse("mouseMoved", x, y)
        self.mouse("mousePressed", x, y)
        self.mouse("mouseReleased", x, y)

    def screenshot(self, name: str | None = None) -> np.ndarray:
        data = base64.b64decode(
            self.call("Page.captureScreenshot", session=True, format="png")["data"])
        if SHOTS and name:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            (Path(SHOTS) / name).write_bytes(data)
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def errors(self) -> list[str]:
        return [json.dumps(e["params"]["exceptionDetails"])[:400] for e in self.events
                if e.get("method") == "Runtime.exceptionThrown"]

    def requested(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        with contextlib.suppress(Exception):  # it may be gone already
            self.call("Browser.close")
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        self.profile.cleanup()


# --- the repo ------------------------------------------------------------------------------


def make_data() -> tuple[np.ndarray, np.ndarray]:
    z, y, x = np.mgrid[0:64, 0:96, 0:128].astype(np.float32)
    img = 40 + 120 * x / 127
    for cz, cy, cx, r in [(20, 30, 40, 12), (40, 60, 90, 16), (32, 70, 30, 10)]:
        img += 90 * np.exp(-((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))
    gray = np.clip(img, 0, 255).astype(np.uint8)
    seeds = np.random.default_rng(3).uniform([0, 0, 0], [64, 96, 128], size=(12, 3))
    d = np.stack([(z - s[0]) ** 2 + (y - s[1]) ** 2 + (x - s[2]) ** 2 for s in seeds])
    lab = (np.argmin(d, axis=0) + 1).astype(np.uint64) * 1000 + 7
    outside = (z - 32) ** 2 / 30**2 + (y - 48) ** 2 / 44**2 + (x - 64) ** 2 / 60**2 > 1
    lab[outside] = 0
    return gray, lab


@pytest.fixture(scope="module")
def site():
    gray, lab = make_data()
    store = diced.Store("memory://viewer-browser")
    repo = store.create_repo("fly", description="viewer test repo")
    repo.create_array("grayscale", dtype="uint8", shape=gray.shape)[:] = gray
    seg = repo.create_labels("segmentation", shape=lab.shape, max_scale=1)
    seg[:] = lab
    repo.create_labels("nopyramid", shape=lab.shape)[:] = lab  # max_scale=0
    repo.create_keyvalue("notes")["readme.txt"] = b"hello"
    huge = repo.create_array("huge", dtype="uint8", shape=(20000, 30000, 40000))  # sparse
    huge[10000:10004, 15000:15010, 20000:20020] = 200
    first = repo.commit("first import", log=["imported grayscale and segmentation"])
    tag = repo.tag("v1.0")
    repo.branch("proofreading", note="proofreading edits")
    seg[0:8, 0:8, 0:8] = 5
    proof = repo.commit("proofread a corner")
    repo.checkout(first.uuid)
    repo.newversion("more imaging")
    repo["grayscale"][0:4] = 0
    later = repo.create_array("later", dtype="float32", shape=(8, 16, 32))  # not in `first`
    later[:] = np.arange(8 * 16 * 32, dtype=np.float32).reshape(8, 16, 32) * 0.25 - 100
    imaging = repo.commit("blank top")
    merged = repo.merge(imaging.uuid, proof.uuid, note="merge proofreading")
    scale1 = np.asarray(repo.version(merged.uuid).instance("segmentation").scale(1)[:])
    long = store.create_repo("long", description="a long history")
    for i in range(LONG - 1):
        long.commit(f"step {i}")
        long.newversion()
    with store.serve(port=0) as handle:
        yield {
            "url": handle.url, "repo": repo, "gray": gray, "lab": lab, "scale1": scale1,
            "first": first.uuid, "tag": tag.uuid, "proof": proof.uuid,
            "imaging": imaging.uuid, "merged": merged.uuid, "long": long.uuid,
        }


@pytest.fixture(scope="module")
def browser():
    b = Chromium()
    yield b
    b.close()


# --- helpers ---------------------------------------------------------------------------------

PANES = {"xy": (0, 1, 2), "zy": (2, 1, 0), "xz": (0, 2, 1)}  # (horizontal, vertical, normal)


def open_view(browser: Chromium, site: dict, query: str) -> None:
    browser.open(f"{site['url']}/#{query}")
    browser.wait_for("document.body.dataset.dag === 'ready' && "
                     "document.querySelectorAll('.pane[data-loaded=\"1\"]').length === 3")
    time.sleep(0.3)  # one more frame


def geometry(browser: Chromium) -> dict[str, Any]:
    return browser.js("""JSON.stringify({
        pos: diced.state.viewer.pos, zoom: diced.state.viewer.zoom,
        panes: Object.fromEntries([...document.querySelectorAll('.pane canvas')].map((c) => {
          const r = c.getBoundingClientRect();
          return [c.parentElement.dataset.plane, [r.left, r.top, r.width, r.height]];
        })),
        labels: [...document.querySelectorAll('.pane .plabel')].map((e) => e.textContent)})""")


def voxel_on_screen(geo: dict[str, Any], plane: str, voxel: tuple[int, int, int]) -> tuple[float, float]:
    """Screen position of a voxel's centre (x, y, z order) in a pane through it."""
    h, v, _ = PANES[plane]
    left, top, w, hgt = geo["panes"][plane]
    pos, zoom = geo["pos"], geo["zoom"]
    return (left + w / 2 + (voxel[h] + 0.5 - pos[h]) * zoom,
            top + hgt / 2 + (voxel[v] + 0.5 - pos[v]) * zoom)


def samples(geo: dict[str, Any], plane: str, shape_xyz: tuple[int, int, int], step: int = 7):
    """(voxel xyz, screen xy) on a grid of the slice a pane shows."""
    h, v, n = PANES[plane]
    cut = int(np.floor(geo["pos"][n]))
    for a in range(2, shape_xyz[h] - 1, step):
        for b in range(2, shape_xyz[v] - 1, step):
            vox = [0, 0, 0]
            vox[h], vox[v], vox[n] = a, b, cut
            sx, sy = voxel_on_screen(geo, plane, tuple(vox))
            left, top, w, hgt = geo["panes"][plane]
            if abs(sx - (left + w / 2)) < 3 or abs(sy - (top + hgt / 2)) < 3:
                continue  # under the crosshair lines
            yield tuple(vox), (sx, sy)


def colours(shot: np.ndarray, box: list[float], min_pixels: int) -> dict[tuple, int]:
    left, top, w, h = (round(t) for t in box)
    region = shot[top:top + h, left:left + w].reshape(-1, 3)
    values, counts = np.unique(region, axis=0, return_counts=True)
    return {tuple(int(c) for c in val): int(n) for val, n in zip(values, counts) if n >= min_pixels}


# --- the page ----------------------------------------------------------------------------


def test_page_shows_the_dag(browser, site):
    open_view(browser, site, f"node={site['merged']}&inst=grayscale")
    dag = json.loads(browser.js("""JSON.stringify({
        nodes: [...document.querySelectorAll('#dag g.node')].map((g) => g.dataset.uuid),
        locked: document.querySelectorAll('#dag g.node.locked').length,
        open: [...document.querySelectorAll('#dag g.node.open')].map((g) => g.dataset.uuid),
        tags: [...document.querySelectorAll('#dag g.tag')].map((g) => g.dataset.uuid),
        merges: document.querySelectorAll('#dag path.edge.merge').length,
        edges: document.querySelectorAll('#dag path.edge').length,
        lanes: [...document.querySelectorAll('#dag .lane-label')].map((t) => t.textContent),
        selected: [...document.querySelectorAll('#dag g.node.sel')].map((g) => g.dataset.uuid),
        box: (() => { const r = document.getElementById('dag').getBoundingClientRect();
                      return [r.left, r.top, r.width, r.height]; })()})"""))
    s = site
    assert sorted(dag["nodes"]) == sorted([s["first"], s["proof"], s["imaging"], s["merged"]])
    assert dag["tags"] == [s["tag"]]  # the tag is a badge on the version it names
    assert dag["open"] == [s["merged"]] and dag["locked"] == 3
    assert dag["selected"] == [s["merged"]]
    assert dag["edges"] == 4 and dag["merges"] == 1
    assert dag["lanes"] == ["master", "proofreading"]
    shot = browser.screenshot("page-dag.png")
    found = colours(shot, dag["box"], 20)
    locked_blue = [c for c in found if abs(c[0] - 0x4f) < 12 and abs(c[1] - 0xa3) < 12
                   and abs(c[2] - 0xff) < 12]
    open_amber = [c for c in found if abs(c[0] - 0xf2) < 12 and abs(c[1] - 0xb8) < 12
                  and abs(c[2] - 0x4b) < 12]
    assert locked_blue and open_amber, "locked and open versions are drawn in their colours"
    assert sum(found[c] for c in locked_blue) > 3 * 150  # three filled discs
    text = browser.js("document.getElementById('node').innerText")
    assert s["merged"] in text and "merge proofreading" in text and "open" in text
    listed = "[...document.querySelectorAll('#inst-table tr.inst')].map((t) => t.dataset.name)"
    assert browser.js(listed) == ["grayscale", "huge", "later", "nopyramid", "notes", "segmentation"]
    assert not browser.errors()
    # an instance created after a version is not listed there
    browser.open(f"{site['url']}/#node={s['first']}")
    browser.wait_for(f"{listed}.length > 0")
    assert browser.js(listed) == ["grayscale", "huge", "nopyramid", "notes", "segmentation"]
    assert "first import" in browser.js("document.getElementById('node').innerText")


def test_image_slices_show_the_array_values(browser, site):
    open_view(browser, site, f"node={site['merged']}&inst=grayscale")
    geo = json.loads(geometry(browser))
    shot = browser.screenshot("page-image.png")
    expect = site["gray"].copy()
    expect[0:4] = 0  # the merged version has the blanked top of the imaging branch
    checked = 0
    for plane in PANES:
        values = colours(shot, geo["panes"][plane], 1)
        assert len(values) > 60, f"{plane}: a real image, not a uniform fill"
        for vox, (sx, sy) in samples(geo, plane, (128, 96, 64)):
            px = shot[int(sy), int(sx)]
            want = int(expect[vox[2], vox[1], vox[0]])
            assert px[0] == px[1] == px[2], f"{plane} {vox}: grey expected, got {px}"
            assert abs(int(px[0]) - want) <= 1, f"{plane} voxel {vox}: {px[0]} on screen, {want} stored"
            checked += 1
    assert checked > 300
    assert not browser.errors()


def test_label_slices_show_distinct_colours(browser, site):
    open_view(browser, site, f"node={site['merged']}&inst=segmentation")
    geo = json.loads(geometry(browser))
    shot = browser.screenshot("page-labels.png")
    lab = site["lab"].copy()
    lab[0:8, 0:8, 0:8] = 5
    for plane in PANES:
        big = [c for c, n in colours(shot, geo["panes"][plane], 150).items()
               if max(c) - min(c) > 40]  # saturated: not grey chrome
        assert len(big) >= 4, f"{plane}: several coloured segments, got {big}"
        colour_of: dict[int, tuple] = {}
        for vox, (sx, sy) in samples(geo, plane, (128, 96, 64), step=5):
            label = int(lab[vox[2], vox[1], vox[0]])
            c = tuple(int(t) for t in shot[int(sy), int(sx)])
            if label == 0:
                assert c == (0, 0, 0), f"{plane} {vox}: background must be black, got {c}"
                continue
            colour_of.setdefault(label, c)
            assert colour_of[label] == c, f"{plane}: label {label} in two colours"
        nonzero = list(colour_of)
        assert len(nonzero) >= 5
        assert len(set(colour_of.values())) == len(nonzero), "different labels, different colours"
    assert not browser.errors()


def test_labels_over_an_image(browser, site):
    open_view(browser, site, f"node={site['merged']}&inst=grayscale&overlay=segmentation")
    browser.wait_for("document.querySelectorAll('.pane[data-overlay=\"1\"]').length === 3")
    time.sleep(0.3)
    geo = json.loads(geometry(browser))
    shot = browser.screenshot("page-overlay.png")
    gray, lab = site["gray"].copy(), site["lab"].copy()
    gray[0:4] = 0
    lab[0:8, 0:8, 0:8] = 5
    tinted = plain = 0
    for vox, (sx, sy) in samples(geo, "xy", (128, 96, 64)):
        px = [int(t) for t in shot[int(sy), int(sx)]]
        g, label = int(gray[vox[2], vox[1], vox[0]]), int(lab[vox[2], vox[1], vox[0]])
        if label == 0:  # background stays the image
            assert abs(px[0] - g) <= 1 and px[0] == px[1] == px[2], (vox, px, g)
            plain += 1
        else:  # segments tint it
            assert max(px) - min(px) > 15, (vox, px)
            tinted += 1
    assert tinted > 50 and plain > 20
    x, y = voxel_on_screen(geo, "xy", (70, 40, 32))
    browser.mouse("mouseMoved", x, y)
    text = browser.wait_for("document.querySelector('.pane.info .hover').textContent"
                            ".includes('segmentation') && document.querySelector('.pane.info .hover').textContent")
    assert f"value {gray[32, 40, 70]}" in text and f"label {lab[32, 40, 70]}  segmentation" in text
    # Neuroglancer gets both layers
    href = browser.js("document.getElementById('open-neuroglancer').href")
    state = json.loads(__import__("urllib.parse").parse.unquote(href.split("#!", 1)[1]))
    assert [(l["type"], l["name"]) for l in state["layers"]] == [
        ("image", "grayscale"), ("segmentation", "segmentation")]


def test_float_array(browser, site):
    """Other dtypes: float32, windowed from the slice's min to max."""
    open_view(browser, site, f"node={site['merged']}&inst=later")
    geo = json.loads(geometry(browser))
    shot = browser.screenshot()
    got = sorted((vox[1] * 32 + vox[0], int(shot[int(sy), int(sx)][0]))
                 for vox, (sx, sy) in samples(geo, "xy", (32, 16, 8), step=1))
    greys = [g for _, g in got]  # the values grow with y * 32 + x: so must the greys
    assert len(greys) > 200 and greys == sorted(greys) and greys[-1] - greys[0] > 200
    x, y = voxel_on_screen(geo, "xy", (9, 5, 4))
    browser.mouse("mouseMoved", x, y)
    want = (4 * 16 * 32 + 5 * 32 + 9) * 0.25 - 100
    browser.wait_for(f"document.querySelector('.pane.info .hover').textContent.endsWith('value {want:g}')", 10)


@pytest.mark.parametrize("query", ["inst=segmentation", "inst=grayscale&overlay=segmentation"])
def test_label_at_the_point(browser, site, query):
    """The info pane names the label at the point and its size (label/ and size/ of the API)."""
    lab = site["lab"].copy()
    lab[0:8, 0:8, 0:8] = 5
    open_view(browser, site, f"node={site['merged']}&{query}&pos=70,40,32")
    want = int(lab[32, 40, 70])
    count = int((lab == want).sum())
    browser.wait_for(f"document.querySelector('.pane.info .point')?.textContent === "
                     f"'at the point: label {want} · {count:,} voxels'", 15)
    # moving the point updates it; background has no size
    browser.js("diced.state.viewer.goTo([1, 90, 60])")
    assert lab[60, 90, 1] == 0
    browser.wait_for("document.querySelector('.pane.info .point')?.textContent === "
                     "'at the point: label 0'", 15)


def test_hover_reads_the_voxel(browser, site):
    open_view(browser, site, f"node={site['merged']}&inst=segmentation&pos=64,48,32")
    geo = json.loads(geometry(browser))
    for plane, vox in [("xy", (70, 40, 32)), ("zy", (64, 50, 20)), ("xz", (30, 48, 40))]:
        x, y = voxel_on_screen(geo, plane, vox)
        browser.mouse("mouseMoved", x, y)
        text = browser.wait_for(
            f"(() => {{ const t = document.querySelector('.pane.info .hover').textContent;"
            f" return t.startsWith('x {vox[0]}  y {vox[1]}  z {vox[2]}') ? t : ''; }})()", 10)
        assert f"label {int(site['lab'][vox[2], vox[1], vox[0]])}" in text


def test_any_version(browser, site):
    """The same voxel at three versions: the branch's edit shows where it is visible."""
    for version, want in [("first", site["lab"][4, 4, 4]), ("proof", 5), ("merged", 5)]:
        open_view(browser, site, f"node={site[version]}&inst=segmentation&pos=4,4,4")
        geo = json.loads(geometry(browser))
        x, y = voxel_on_screen(geo, "xy", (4, 4, 4))
        browser.mouse("mouseMoved", x, y)
        text = browser.wait_for("document.querySelector('.pane.info .hover').textContent"
                                ".includes('label') && document.querySelector('.pane.info .hover').textContent")
        assert f"label {int(want)}\n" in text + "\n", (version, text)


def test_click_a_version_in_the_dag(browser, site):
    open_view(browser, site, f"node={site['merged']}&inst=segmentation&pos=10,20,30")
    for uuid in (site["proof"], site["tag"], site["first"]):
        x, y = json.loads(browser.js(
            f"JSON.stringify((() => {{ const r = document.querySelector('#dag [data-uuid=\"{uuid}\"]')"
            f".getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; }})())"))
        browser.click(x, y)
        browser.wait_for(f"document.querySelector('#node h3').textContent.trim() === '{uuid}'", 10)
        # the slices are read at the version clicked
        browser.wait_for(f"diced.state.viewer && diced.state.viewer.uuid === '{uuid}' && "
                         "document.querySelectorAll('.pane[data-loaded=\"1\"]').length === 3")
        assert browser.js(f"!!document.querySelector('#dag g.sel[data-uuid=\"{uuid}\"]') || "
                          f"!!document.querySelector('#dag g.tag[data-uuid=\"{uuid}\"]')")
        assert f"node={uuid}" in browser.js("location.hash")
        # the same place at the other version
        assert browser.js("diced.state.viewer.pos.map(Math.floor)") == [10, 20, 30]


def test_scale_choice(browser, site):
    open_view(browser, site, f"node={site['merged']}&inst=segmentation&pos=64,48,32")
    browser.js("(() => { const s = document.querySelector('#view-head select'); s.value = '1';"
               " s.dispatchEvent(new Event('change')); })()")
    browser.wait_for("[...document.querySelectorAll('.pane .plabel')]"
                     ".every((e) => e.textContent.endsWith('scale 1'))", 20)
    geo = json.loads(geometry(browser))
    vox = (70, 40, 32)
    x, y = voxel_on_screen(geo, "xy", vox)
    browser.mouse("mouseMoved", x, y)
    text = browser.wait_for("document.querySelector('.pane.info .hover').textContent"
                            ".includes('(scale 1)') && document.querySelector('.pane.info .hover').textContent")
    want = int(site["scale1"][vox[2] // 2, vox[1] // 2, vox[0] // 2])
    assert f"label {want}  (scale 1)" in text
    assert any("raw/0_1_2/" in u and "scale=1" in u for u in browser.requested())


def test_keyvalue_instance_lists_keys(browser, site):
    browser.open(f"{site['url']}/#node={site['merged']}&inst=notes")
    text = browser.wait_for("document.querySelector('.kv-list ul') && "
                            "document.querySelector('.kv-list').innerText")
    assert "1 key" in text and "readme.txt" in text


def test_the_page_loads_nothing_from_elsewhere(browser, site):
    open_view(browser, site, f"node={site['merged']}&inst=grayscale")
    urls = browser.requested()
    assert urls and all(u.startswith((site["url"] + "/", "data:")) for u in urls), \
        [u for u in urls if not u.startswith(site["url"])]


# --- Neuroglancer ------------------------------------------------------------------------

needs_ng = pytest.mark.skipif(viewer.neuroglancer_client_dir() is None,
                              reason="the neuroglancer package (its client) is not installed")


def neuroglancer_link(browser: Chromium, site: dict, inst: str) -> str:
    open_view(browser, site, f"node={site['merged']}&inst={inst}")
    href = browser.js("document.getElementById('open-neuroglancer').href")
    assert href.startswith(site["url"] + "/neuroglancer/v/diced/#!")
    state = json.loads(__import__("urllib.parse").parse.unquote(href.split("#!", 1)[1]))
    assert state["layers"][0]["source"] == f"dvid://{site['url']}/{site['merged']}/{inst}"
    return href


@needs_ng
@pytest.mark.parametrize("inst", ["segmentation", "nopyramid"])
def test_neuroglancer_shows_the_segmentation(browser, site, inst):
    browser.open(neuroglancer_link(browser, site, inst))
    deadline = time.monotonic() + 90
    while True:
        time.sleep(2)
        shot = browser.screenshot()
        # coloured segments: saturated colours covering many pixels, other than the yellow
        # bounding box and the axis lines
        found = colours(shot, [0, 0, WIDTH, HEIGHT], 400)
        segs = [c for c in found if max(c) - min(c) > 50 and not (c[0] > 200 and c[1] > 200 and c[2] < 80)]
        if len(segs) >= 5 or time.monotonic() > deadline:
            break
    browser.screenshot(f"neuroglancer-{inst}.png")
    assert len(segs) >= 5, f"segmentation colours in Neuroglancer: {segs}; errors {browser.errors()}"
    urls = browser.requested()
    assert any(f"/{inst}/raw/0_1_2/64_64_64/" in u and "compression=googlegzip" in u for u in urls)
    assert all(u.startswith((site["url"] + "/", "data:", "blob:")) for u in urls), \
        [u for u in urls if not u.startswith(site["url"])]


@needs_ng
def test_neuroglancer_shows_the_image(browser, site):
    browser.open(neuroglancer_link(browser, site, "grayscale"))
    deadline = time.monotonic() + 90
    while True:
        time.sleep(2)
        shot = browser.screenshot()
        greys = [c for c in colours(shot, [0, 0, WIDTH, HEIGHT], 30) if max(c) - min(c) <= 2]
        if len(greys) > 60 or time.monotonic() > deadline:
            break
    assert len(greys) > 60, "grey levels of the image in Neuroglancer"
    assert any("/grayscale/" in u and ("/jpeg" in u or "subvolblocks" in u) for u in browser.requested())


def test_navigation(browser, site):
    """Keys and the wheel step through slices, +/- and Ctrl+wheel zoom, dragging pans,
    clicking moves the point; the view is kept in the URL fragment."""
    open_view(browser, site, f"node={site['merged']}&inst=grayscale&pos=64,48,32")
    geo = json.loads(geometry(browser))
    left, top, w, h = geo["panes"]["xy"]
    cx, cy = left + w / 2, top + h / 2
    pos = lambda: browser.js("diced.state.viewer.pos.map(Math.floor)")
    zoom = lambda: browser.js("diced.state.viewer.zoom")

    def key(k: str) -> None:
        for kind in ("keyDown", "keyUp"):
            browser.call("Input.dispatchKeyEvent", session=True, type=kind, key=k,
                         code={"ArrowDown": "ArrowDown", "+": "Equal", "-": "Minus"}[k],
                         windowsVirtualKeyCode={"ArrowDown": 40, "+": 187, "-": 189}[k])

    browser.mouse("mouseMoved", cx + 20, cy + 20)  # the XY pane has the focus
    key("ArrowDown")
    key("ArrowDown")
    assert pos() == [64, 48, 34]
    browser.call("Input.dispatchMouseEvent", session=True, type="mouseWheel", x=cx + 20,
                 y=cy + 20, deltaX=0, deltaY=-100)
    assert pos() == [64, 48, 33]
    browser.wait_for("document.querySelector('.pane[data-plane=xy] .plabel').textContent"
                     ".startsWith('XY  z=33')", 10)
    z0 = zoom()
    key("+")
    assert zoom() == pytest.approx(z0 * 1.25)
    key("-")
    assert zoom() == pytest.approx(z0)
    browser.call("Input.dispatchMouseEvent", session=True, type="mouseWheel", x=cx + 20,
                 y=cy + 20, deltaX=0, deltaY=-100, modifiers=2)  # Ctrl
    assert zoom() == pytest.approx(z0 * 1.25)
    z1 = zoom()
    # drag 10 voxels to the left: the view moves 10 voxels right
    browser.mouse("mousePressed", cx, cy)
    for k in range(1, 6):
        browser.mouse("mouseMoved", cx - 2 * k * z1, cy)
    browser.mouse("mouseReleased", cx - 10 * z1, cy)
    assert pos() == [74, 48, 33]
    # a click moves the point to the voxel under the mouse (the other panes follow)
    browser.click(cx - 6 * z1, cy + 3 * z1)  # the centre of voxel (68, 51)
    assert pos() == [68, 51, 33]
    browser.wait_for("document.querySelector('.pane[data-plane=zy] .plabel').textContent"
                     ".startsWith('ZY  x=68')", 10)
    browser.wait_for("location.hash.includes('pos=68%2C51%2C33') || location.hash.includes('pos=68,51,33')", 10)
    assert not browser.errors()


def test_long_history_and_repo_from_the_query(browser, site):
    """Repo.view() opens /?repo=<root>; a long history draws its newest versions only."""
    browser.open(f"{site['url']}/?repo={site['long']}")
    browser.wait_for("document.body.dataset.dag === 'ready'")
    assert browser.js("document.querySelector('#repo-list li.sel').dataset.root") == site["long"]
    assert browser.js("document.querySelectorAll('#repo-list li').length") == 2
    drawn = browser.js("document.querySelectorAll('#dag g.node').length")
    from diced.server.viewer import STATIC_DIR

    max_nodes = int(re.search(r"MAX_NODES = (\d+)", (STATIC_DIR / "dag.js").read_text())[1])
    assert drawn == max_nodes < LONG
    assert browser.js("document.getElementById('dag').textContent").count(
        f"{LONG - max_nodes} older versions not drawn") == 1
    newest = max(site["repo"].store.open_repo("long").versions(), key=lambda v: v.node.id)
    assert browser.js("document.querySelector('#dag g.node.sel').dataset.uuid") == newest.uuid
    # scrolled to the newest versions, the chosen one in sight
    assert browser.js("""(() => { const d = document.getElementById('dag').getBoundingClientRect();
        const r = document.querySelector('#dag g.node.sel').getBoundingClientRect();
        return r.left >= d.left && r.right <= d.right; })()""")
    assert not browser.errors()


def test_huge_array(browser, site):
    """A sparse 40000 x 30000 x 20000 array: the panes never ask for more than MAX_TILE_VOXELS
    per slice (zoomed out too far they say so), and "go to" finds the written voxels."""
    open_view(browser, site, f"node={site['merged']}&inst=huge")
    max_tile = 1 << int(re.search(r"MAX_TILE_VOXELS = 1 << (\d+)",
                                  (viewer.STATIC_DIR / "slices.js").read_text())[1])
    browser.js("diced.state.viewer.zoomBy(1 / 16)")
    browser.wait_for("[...document.querySelectorAll('.pane .perr')]"
                     ".every((e) => e.textContent.startsWith('zoomed out too far to read scale 0'))", 10)
    browser.js("document.getElementById('goto').focus()")
    browser.call("Input.insertText", session=True, text="20005, 15002, 10001")
    for kind in ("keyDown", "keyUp"):
        browser.call("Input.dispatchKeyEvent", session=True, type=kind, key="Enter", code="Enter",
                     windowsVirtualKeyCode=13)
    assert browser.js("diced.state.viewer.pos.map(Math.floor)") == [20005, 15002, 10001]
    browser.js("diced.state.viewer.zoomBy(64)")
    browser.wait_for("[...document.querySelectorAll('.pane')].slice(0, 3)"
                     ".every((p) => p.dataset.loaded === '1' && !p.querySelector('.perr').textContent)")
    geo = json.loads(geometry(browser))
    x, y = voxel_on_screen(geo, "xy", (20005, 15002, 10001))
    browser.mouse("mouseMoved", x, y)
    browser.wait_for("document.querySelector('.pane.info .hover').textContent.endsWith('value 200')", 10)
    sizes = [re.search(r"/raw/0_1_2/(\d+)_(\d+)_(\d+)/", u) for u in browser.requested()]
    voxels = [int(m[1]) * int(m[2]) * int(m[3]) for m in sizes if m]
    assert voxels and max(voxels) <= max_tile


def test_empty_store(browser):
    with diced.Store("memory://viewer-browser-empty").serve(port=0) as handle:
        browser.open(handle.url + "/")
        text = browser.wait_for("document.getElementById('node').innerText")
        assert "no repos yet" in text
        assert browser.js("document.getElementById('repo-list').innerText") == "no repos in this store"
        assert not browser.errors()


# --- the tour's store: a new user's first look ------------------------------------------------


@pytest.fixture(scope="module")
def tour_site(tmp_path_factory):
    """Exactly the store ``diced tour --keep`` leaves: a 94088 x 78317 x 134576 grayscale with
    256³ written at z, y, x = 1000, 2000, 3000 and a segmentation over it."""
    import argparse
    import contextlib as _cl

    from diced.cli import tour

    path = tmp_path_factory.mktemp("tour") / "tour.diced"
    with _cl.redirect_stdout(io.StringIO()):
        tour.run(argparse.Namespace(store=str(path), size=256, keep=True))
    store = diced.Store(str(path))
    with store.serve(port=0) as handle:
        yield {"url": handle.url, "repo": store.open_repo("tour")}
    store.close()


def test_tour_store_opens_on_its_data(browser, tour_site):
    """No fragment, no click: the page shows the grayscale with the segmentation over it,
    centred on the written data, and its Neuroglancer link opens there too."""
    browser.open(tour_site["url"] + "/")
    browser.wait_for("document.body.dataset.dag === 'ready' && "
                     "document.querySelectorAll('.pane[data-loaded=\"1\"]').length === 3 && "
                     "document.querySelectorAll('.pane[data-overlay=\"1\"]').length === 3", 180)
    time.sleep(0.5)
    assert browser.js("diced.state.inst") == "grayscale"
    assert browser.js("diced.state.view.overlay") == "segmentation"
    pos = browser.js("diced.state.viewer.pos")
    data = [(3000, 3256), (2000, 2256), (1000, 1256)]  # x, y, z
    assert all(lo <= p < hi for p, (lo, hi) in zip(pos, data)), pos
    geo = json.loads(geometry(browser))
    shot = browser.screenshot("viewer-page.png")
    for plane in PANES:
        found = colours(shot, geo["panes"][plane], 1)
        assert len(found) > 200, f"{plane}: a real image, not a uniform fill"
        tinted = [c for c, n in colours(shot, geo["panes"][plane], 30).items()
                  if max(c) - min(c) > 30]
        assert len(tinted) >= 10, f"{plane}: label colours over the image"
        left, top, w, h = (round(t) for t in geo["panes"][plane])
        region = shot[top + 10:top + h - 10, left + 10:left + w - 10]
        assert (region.max(axis=2) > 40).mean() > 0.5, f"{plane}: mostly data, not black"
    assert not browser.errors()
    if viewer.neuroglancer_client_dir() is None:
        return
    href = browser.js("document.getElementById('open-neuroglancer').href")
    state = json.loads(__import__("urllib.parse").parse.unquote(href.split("#!", 1)[1]))
    assert all(lo <= p < hi for p, (lo, hi) in zip(state["position"], data)), state["position"]
    assert [la["name"] for la in state["layers"]] == ["grayscale", "segmentation"]
    browser.open(href)
    deadline = time.monotonic() + 300  # (a loaded machine: it usually takes seconds)
    while True:
        time.sleep(2)
        shot = browser.screenshot()
        found = colours(shot, [0, 0, WIDTH, HEIGHT], 1)
        # segment colours: saturated, not the yellow outline; quantized to 32 levels, since
        # the tour's grayscale noise under the half-transparent segments varies every pixel
        coarse = colours(shot // 32 * 32, [0, 0, WIDTH, HEIGHT], 400)
        segs = [c for c in coarse if max(c) - min(c) > 50
                and not (c[0] > 200 and c[1] > 200 and c[2] < 80)]
        lit = (shot.max(axis=2) > 40).mean()  # not black: the data fills the four panels
        if (len(found) > 500 and len(segs) >= 5 and lit > 0.08) or time.monotonic() > deadline:
            break
    browser.screenshot("viewer-neuroglancer.png")
    # the image under the segments gives many shades, the segments their colours
    assert len(found) > 500, f"the image in Neuroglancer: {len(found)} colours"
    assert len(segs) >= 5, f"segments in Neuroglancer: {segs}"
    assert lit > 0.08, f"Neuroglancer shows mostly black: {lit:.3f} of the screen lit"
    urls = browser.requested()
    assert any("/grayscale/" in u for u in urls) and any("/segmentation/" in u for u in urls)
