"""Several processes on one LMDB store: overlapping unaligned writers lose no updates, and a
writer killed with SIGKILL mid-write leaves whole chunks and intact locked versions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import diced

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and processes")

SHAPE = (64, 64)
CHUNKS = (16, 16)
ROUNDS = 30
# unaligned boxes that overlap, and share chunks outside their overlap too
BOXES = {
    1: (slice(5, 40), slice(3, 37)),
    2: (slice(20, 57), slice(25, 60)),
}

WRITER = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import diced

    path, who, go, rounds = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    boxes = {1: (slice(5, 40), slice(3, 37)), 2: (slice(20, 57), slice(25, 60))}
    store = diced.Store(path)
    arr = store.open_repo("conc").array("img")
    deadline = time.monotonic() + 60
    while not os.path.exists(go):  # start together
        if time.monotonic() > deadline:
            sys.exit("no go signal")
        time.sleep(0.001)
    box = boxes[who]
    shape = tuple(s.stop - s.start for s in box)
    for i in range(1, rounds + 1):
        # every round writes values no other write uses: who * 1000 + round
        if i % 2:
            arr[box] = who * 1000 + i
        else:
            arr[box] = np.full(shape, who * 1000 + i, dtype=np.uint16)
    store.close()
    print("done", who)
""")


def _value_sets(box_ids):
    return {who * 1000 + i for who in box_ids for i in range(1, ROUNDS + 1)}


def test_overlapping_unaligned_writers_lose_no_updates(tmp_path):
    path = str(tmp_path / "conc.diced")
    store = diced.Store(path)
    repo = store.create_repo("conc")
    arr = repo.create_array("img", "uint16", SHAPE, chunks=CHUNKS)
    arr[0:2, 0:2] = 7  # something old in a chunk that box 1 also touches
    store.close()
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, path, str(who), str(go), str(ROUNDS)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for who in BOXES]
    time.sleep(0.5)  # let both import and open the store
    go.touch()
    for p in procs:
        _out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    store = diced.Store(path)
    got = store.open_repo("conc").array("img")[...]
    store.close()

    in1 = np.zeros(SHAPE, bool)
    in1[BOXES[1]] = True
    in2 = np.zeros(SHAPE, bool)
    in2[BOXES[2]] = True
    last = {who: who * 1000 + ROUNDS for who in BOXES}
    # outside both boxes: untouched
    outside = ~in1 & ~in2
    expect_outside = np.zeros(SHAPE, np.uint16)
    expect_outside[0:2, 0:2] = 7
    assert np.array_equal(got[outside], expect_outside[outside])
    # each box's own part holds that writer's last value: the other writer's
    # read-modify-write of a shared chunk never put back an older version of it
    assert (got[in1 & ~in2] == last[1]).all()
    assert (got[in2 & ~in1] == last[2]).all()
    # the overlap holds one of the two last writes (whole box writes are one transaction)
    overlap = got[in1 & in2]
    assert set(np.unique(overlap).tolist()) <= _value_sets(BOXES)
    assert len(np.unique(overlap)) == 1 and overlap[0] in last.values()
    # the boxes share chunks outside their overlap, so the test exercised shared RMW
    chunks1 = {(r // 16, c // 16) for r, c in zip(*np.nonzero(in1 & ~in2))}
    chunks2 = {(r // 16, c // 16) for r, c in zip(*np.nonzero(in2 & ~in1))}
    assert chunks1 & chunks2


KILLED = textwrap.dedent("""
    import os, sys
    import numpy as np
    import diced

    path, started = sys.argv[1], sys.argv[2]
    store = diced.Store(path)
    arr = store.open_repo("crash").array("vol")
    base = np.load(sys.argv[3])
    g = 1
    while True:  # generations of new content, one aligned slab (one transaction) at a time
        new = base + np.uint8(g)
        for z in range(0, 256, 32):
            arr[z:z + 32] = new[z:z + 32]
            if not os.path.exists(started):
                open(started, "w").close()
        g += 1
""")


def test_sigkill_mid_write_leaves_whole_chunks(tmp_path):
    path = str(tmp_path / "crash.diced")
    rng = np.random.default_rng(3)
    base = rng.integers(0, 200, size=(256, 256, 256), dtype=np.uint8)
    np.save(tmp_path / "base.npy", base)
    locked_content = rng.integers(0, 255, size=(256, 256, 256), dtype=np.uint8)
    store = diced.Store(path)
    repo = store.create_repo("crash")
    vol = repo.create_array("vol", "uint8", (256, 256, 256), chunks=(32, 32, 32))
    vol[...] = locked_content
    locked = repo.commit("locked before the crash")
    repo.newversion("open node")
    repo.array("vol")[...] = base  # generation 0: the old content of the open node
    store.close()

    started = tmp_path / "started"
    proc = subprocess.Popen([sys.executable, "-c", KILLED, path, str(started),
                             str(tmp_path / "base.npy")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the writer never started"
            time.sleep(0.01)
        time.sleep(0.3)  # now in the middle of writing
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    store = diced.Store(path)
    repo = store.open_repo("crash")
    assert np.array_equal(repo.version(locked.uuid).array("vol")[...], locked_content)
    head = repo.version("master~0")
    assert not head.locked
    got = head.array("vol")[...]
    generations = set()
    for idx in np.ndindex(8, 8, 8):
        box = tuple(slice(i * 32, (i + 1) * 32) for i in idx)
        g = np.uint8(got[box].flat[0] - base[box].flat[0])
        assert np.array_equal(got[box], base[box] + g), f"chunk {idx} is torn"
        generations.add(int(g))
    assert generations - {0}, "the writer wrote nothing before it was killed"
    # the store is still writable (no stale writer lock) and consistent
    repo.checkout(head.uuid)
    repo.array("vol")[0:32, 0:32, 0:32] = 1
    repo.commit("after the crash")
    assert (repo.version(head.uuid).array("vol")[0:32, 0:32, 0:32] == 1).all()
    store.close()
