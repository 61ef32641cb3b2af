"""Many clients at once against ``diced serve`` on an LMDB store: 16 readers and 2 writers for a
bounded time (10 s here; ``benchmarks/bench_server.py --soak 30`` runs 30 s). No request may
fail, and no write may be lost: both writers change voxels inside the *same* label blocks
(interleaved z planes, so every write is a partial-chunk read-modify-write racing the other
writer) and add keyvalue keys; everything written must be there at the end."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import diced
from diced.server import serve

SECONDS = 10.0
READERS, WRITERS = 16, 2


def test_readers_and_writers_together(tmp_path) -> None:
    store = diced.Store(str(tmp_path / "conc.diced"))
    repo = store.create_repo("conc")
    gray = repo.create_array("gray", "uint8", (128, 128, 128))
    gray[:] = 9
    seg = repo.create_labels("seg", (128, 128, 128))
    seg[:] = 1
    repo.create_keyvalue("kv")
    u = repo.uuid
    errors: list[str] = []
    written: dict[int, list[int]] = {w: [] for w in range(WRITERS)}
    counts = {"reads": 0}
    lock = threading.Lock()
    stop = time.monotonic() + SECONDS

    def reader(i: int, url: str) -> None:
        paths = [f"/api/node/{u}/gray/raw/0_1_2/64_64_64/{(i % 2) * 64}_0_0",
                 f"/api/node/{u}/seg/raw/0_1_2/64_64_64/0_0_0?compression=googlegzip",
                 f"/api/node/{u}/seg/blocks/128_128_128/0_0_0",
                 f"/api/node/{u}/seg/label/5_5_5", f"/api/node/{u}/kv/keys",
                 "/api/repos/info", f"/api/node/{u}/seg/sparsevol-coarse/1"]
        n = 0
        with httpx.Client(base_url=url, timeout=60) as c:
            while time.monotonic() < stop:
                p = paths[n % len(paths)]
                n += 1
                try:
                    r = c.get(p)
                except httpx.HTTPError as exc:
                    errors.append(f"reader {i} {p}: {exc!r}")
                    continue
                if r.status_code != 200:
                    errors.append(f"reader {i} {p}: {r.status_code} {r.text[:100]}")
                elif "gray" in p and len(r.content) != 64 ** 3:
                    errors.append(f"reader {i} {p}: {len(r.content)} bytes")
        with lock:
            counts["reads"] += n

    def writer(w: int, url: str) -> None:
        n = 0
        with httpx.Client(base_url=url, timeout=60) as c:
            while time.monotonic() < stop and n < 60:
                z = 2 * n + w  # writer 0: even planes, writer 1: odd planes, same blocks
                label = 1000 + z
                plane = np.full((1, 128, 128), label, np.uint64)
                r = c.post(f"/api/node/{u}/seg/raw/0_1_2/128_128_1/0_0_{z}",
                           content=plane.tobytes())
                r2 = c.post(f"/api/node/{u}/kv/key/w{w}-{n:04d}", content=f"{w}:{n}".encode())
                if r.status_code != 200 or r2.status_code != 200:
                    errors.append(f"writer {w} step {n}: {r.status_code} {r2.status_code} "
                                  f"{r.text[:100]}")
                else:
                    written[w].append(z)
                n += 1

    with serve(store, port=0) as h:
        threads = [threading.Thread(target=reader, args=(i, h.url)) for i in range(READERS)]
        threads += [threading.Thread(target=writer, args=(w, h.url)) for w in range(WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(SECONDS + 120)
        assert not any(t.is_alive() for t in threads)
        assert not errors, errors[:10]
        assert counts["reads"] > READERS
        # nothing lost: every plane each writer wrote holds its label, every key is there
        with httpx.Client(base_url=h.url, timeout=60) as c:
            vol = np.frombuffer(c.get(f"/api/node/{u}/seg/raw/0_1_2/128_128_128/0_0_0").content,
                                "<u8").reshape(128, 128, 128)
            keys = set(c.get(f"/api/node/{u}/kv/keys").json())
    assert all(written.values())
    for w, planes in written.items():
        for z in planes:
            assert (vol[z] == 1000 + z).all(), (w, z)
        assert {f"w{w}-{n:04d}" for n in range(len(planes))} <= keys
    untouched = sorted(set(range(128)) - {z for p in written.values() for z in p})
    assert all((vol[z] == 1).all() for z in untouched)
    # the label index agrees with the voxels (no lost index update either)
    seg = diced.Store(str(tmp_path / "conc.diced")).open_repo("conc").labels("seg")
    for z in written[0][:5] + written[1][:5]:
        assert seg.count(1000 + z) == 128 * 128
