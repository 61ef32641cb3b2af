"""Several processes on one repo on file://, s3:// (moto server) and gs:// (emulator): no lost
voxel, label index or metadata update, no id handed out twice, nothing lands in a version
after ``commit()`` returned, and a writer killed mid-write leaves every chunk writable.

The subprocesses reach the emulators (threads of the pytest process) over 127.0.0.1, as
separate machines would: separate caches, separate connections. Counts are lost updates,
asserted 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import numpy as np
import pytest

import diced
from diced.errors import ConcurrencyError, LockedNodeError
from diced.repo import keys as K
from diced.repo import writers

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes"),
              pytest.mark.backends("file", "s3", "gcs")]

WORKERS = 4

WORKER = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    import diced
    from diced.errors import LockedNodeError

    url, opts, mode, go, who = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    args = json.loads(sys.argv[6])
    store = diced.Store(url, **opts)
    repo = store.open_repo("conc", version=args.get("version"))
    deadline = time.monotonic() + 120
    while not os.path.exists(go):  # start together
        if time.monotonic() > deadline:
            sys.exit("no go signal")
        time.sleep(0.002)
    box = tuple(slice(a, b) for a, b in args.get("box", []))
    out = []
    if mode == "voxels":
        arr = repo.array("img")
        for i in range(1, args["rounds"] + 1):
            arr[box] = who * 1000 + i
    elif mode == "labels":
        seg = repo.labels("seg")
        for i in range(1, args["rounds"] + 1):
            seg[box] = who * 100 + i
    elif mode == "allocate":
        seg = repo.labels("seg")
        out = [seg.allocate(1)[0] for _ in range(args["n"])]
    elif mode == "until_locked":
        arr = repo.array("img")
        i = 0
        try:
            while True:
                i += 1
                arr[box] = (who * 1000 + i) % 65536
        except LockedNodeError:
            out = [i]
    elif mode == "meta":
        child = repo.branch(f"b{who}")
        a = repo.create_array(f"a{who}", "uint8", (16, 16), chunks=(8, 8))
        a[...] = who
        done = repo.commit(f"from {who}")
        out = [child.uuid, done.uuid]
    elif mode == "race":  # newversion on master's leaf and same-name tags, racing
        from diced.errors import DuplicateNameError, UnlockedNodeError
        for j in range(args["rounds"]):
            try:
                repo.tag(f"t{j}", parent=args["version"])
                out.append(f"t{j}")
            except DuplicateNameError:
                pass
            while True:
                repo.refresh()
                leaf = repo.version("master")
                if not leaf.locked:
                    time.sleep(0.005)
                    continue
                try:
                    v = repo.newversion(f"m{who}-{j}", parent=leaf.uuid)
                except (DuplicateNameError, UnlockedNodeError):
                    continue
                repo.commit(uuid=v.uuid)
                break
    elif mode == "crash":
        arr = repo.array("img")
        g = 0
        while True:
            g += 1
            arr[...] = g % 200
            if g == 2:
                open(args["started"], "w").close()
    store.close()
    print(json.dumps(out))
""")


def _options(location: Any) -> dict[str, Any]:
    return dict(location.options)


def _spawn(location: Any, mode: str, go: Any, who: int, args: dict[str, Any],
           env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(location), json.dumps(_options(location)), mode,
         str(go), str(who), json.dumps(args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})})


def _run_all(location: Any, tmp_path: Any, mode: str, per_worker: list[dict[str, Any]]
             ) -> list[list[Any]]:
    go = tmp_path / f"go-{mode}-{time.monotonic_ns()}"
    procs = [_spawn(location, mode, go, who, args) for who, args in enumerate(per_worker, 1)]
    time.sleep(0.5)
    go.touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


def _open(location: Any) -> Any:
    return diced.Store(location, **location.options)


# unaligned boxes (chunks 16x16) that overlap each other and share chunks outside the overlaps
BOXES = [((3, 37), (5, 40)), ((20, 57), (25, 60)), ((9, 50), (30, 63)), ((30, 64), (0, 22))]


def test_overlapping_voxel_writers_lose_nothing(store_location, tmp_path):
    rounds = 6
    store = _open(store_location)
    repo = store.create_repo("conc")
    repo.create_array("img", "uint16", (64, 64), chunks=(16, 16))[0:2, 0:2] = 7
    store.close()
    _run_all(store_location, tmp_path, "voxels",
             [{"box": b, "rounds": rounds} for b in BOXES[:WORKERS]])
    store = _open(store_location)
    got = store.open_repo("conc").array("img")[...]
    store.close()
    masks = []
    for b in BOXES[:WORKERS]:
        m = np.zeros(got.shape, bool)
        m[tuple(slice(*x) for x in b)] = True
        masks.append(m)
    cover = np.sum(masks, axis=0)
    lost = 0
    for who, m in enumerate(masks, 1):  # voxels only this writer writes: its last value
        lost += int(np.count_nonzero(got[m & (cover == 1)] != who * 1000 + rounds))
    last = {who * 1000 + rounds for who in range(1, WORKERS + 1)}
    shared = got[cover > 1]  # the last write of a voxel is some writer's last round
    lost += int(np.count_nonzero(~np.isin(shared, list(last))))
    outside = np.ones(got.shape, bool)
    outside[0:2, 0:2] = False
    lost += int(np.count_nonzero(got[(cover == 0) & outside] != 0))
    lost += int(np.count_nonzero(got[0:2, 0:2][cover[0:2, 0:2] == 0] != 7))
    assert lost == 0


LABEL_BOXES = [((0, 40), (10, 90), (20, 100)), ((5, 64), (50, 128), (0, 70)),
               ((20, 64), (0, 70), (60, 128)), ((0, 30), (60, 128), (40, 120))]


def test_label_writers_keep_the_index_exact(store_location, tmp_path):
    rounds = 3
    store = _open(store_location)
    repo = store.create_repo("conc")
    repo.create_labels("seg", (64, 128, 128))
    store.close()
    _run_all(store_location, tmp_path, "labels",
             [{"box": b, "rounds": rounds} for b in LABEL_BOXES[:WORKERS]])
    store = _open(store_location)
    seg = store.open_repo("conc").labels("seg")
    vol = seg[...]
    wrong = 0
    for lab in [w * 100 + i for w in range(1, WORKERS + 1) for i in range(1, rounds + 1)]:
        expect: dict[tuple[int, int, int], int] = {}
        zz, yy, xx = np.nonzero(vol == lab)
        for b in set(zip((zz // 64).tolist(), (yy // 64).tolist(), (xx // 64).tolist())):
            sel = vol[b[0] * 64:(b[0] + 1) * 64, b[1] * 64:(b[1] + 1) * 64,
                      b[2] * 64:(b[2] + 1) * 64]
            expect[b] = int(np.count_nonzero(sel == lab))
        got = {tuple(int(x) for x in k): int(v) for k, v in seg.block_counts(lab).items()}
        wrong += got != expect
    store.close()
    assert wrong == 0
    # every writer's last label survives where only it wrote
    assert len(np.unique(vol)) >= 2


def test_allocate_never_hands_out_an_id_twice(store_location, tmp_path):
    store = _open(store_location)
    store.create_repo("conc").create_labels("seg", (64, 64, 64))
    store.close()
    outs = _run_all(store_location, tmp_path, "allocate", [{"n": 8}] * WORKERS)
    ids = [i for out in outs for i in out]
    assert len(ids) - len(set(ids)) == 0
    assert len(ids) == 8 * WORKERS


def test_nothing_lands_after_commit_returned(store_location, tmp_path):
    trials = 3 if store_location.kind == "file" else 2
    for trial in range(trials):
        store = _open(store_location)
        repo = store.create_repo("conc", exist_ok=True)
        if trial == 0:
            repo.create_array("img", "uint16", (64, 64), chunks=(16, 16))
        else:
            repo.newversion(f"trial {trial}")
        version = repo.head.uuid
        go = tmp_path / f"go-lock-{trial}"
        procs = [_spawn(store_location, "until_locked", go, who,
                        {"box": b, "version": version}) for who, b in enumerate(BOXES, 1)]
        time.sleep(0.5)
        go.touch()
        time.sleep(1.0 + 0.3 * trial)  # the writers are at work
        repo.commit(f"trial {trial}")
        seen = store.open_repo("conc", version=version).version(version).array("img")[...]
        for p in procs:
            _out, err = p.communicate(timeout=600)
            assert p.returncode == 0, err[-3000:]
        store.close()
        store = _open(store_location)
        diced.backends.cache.chunk_cache().clear()
        later = store.open_repo("conc").version(version).array("img")[...]
        store.close()
        assert np.count_nonzero(later != seen) == 0, f"trial {trial}: a write landed after commit"


def test_metadata_writers_lose_no_branch_instance_or_commit(store_location, tmp_path):
    store = _open(store_location)
    repo = store.create_repo("conc")
    root = repo.commit("root")
    store.close()
    outs = _run_all(store_location, tmp_path, "meta", [{"version": root.uuid}] * WORKERS)
    store = _open(store_location)
    repo = store.open_repo("conc")
    uuids = [out[0] for out in outs]
    assert len(set(uuids)) == len(uuids)
    ids = set()
    for who, (child, done) in enumerate(outs, 1):
        assert child == done  # commit locked the branch's new version
        v = repo.version(child)
        ids.add(v.id)
        assert v.locked
        assert (v.array(f"a{who}")[...] == who).all()
    assert len(ids) == WORKERS
    assert {f"b{w}" for w in range(1, WORKERS + 1)} <= set(repo.branches())
    store.close()


def test_racing_newversions_and_tags_make_one_line_of_history(store_location, tmp_path):
    """Processes race newversion on master's leaf (each must win once per round) and tag
    the root with the same names: exactly one wins each race, master stays one line (no
    version forked beside the leaf), and an open from the state snapshot equals a full
    load (no version a lost race wrote and withdrew)."""
    rounds = 3
    store = _open(store_location)
    repo = store.create_repo("conc")
    root = repo.commit("root")
    store.close()
    outs = _run_all(store_location, tmp_path, "race",
                    [{"version": root.uuid, "rounds": rounds}] * WORKERS)
    assert sorted(t for out in outs for t in out) == [f"t{j}" for j in range(rounds)]
    store = _open(store_location)
    repo = store.open_repo("conc")
    full = _open(store_location).open_repo("conc")
    full.refresh(full=True)
    for r in (repo, full):
        line = r.log(r.version("master"))
        assert line[0].note == "root"
        assert sorted(v.note for v in line[1:]) == sorted(
            f"m{w}-{j}" for w in range(1, WORKERS + 1) for j in range(rounds))
        assert len(r.dag.nodes) == 1 + WORKERS * rounds + rounds  # no other version
        assert set(r.tags()) == {f"t{j}" for j in range(rounds)}
    assert sorted((n.id, n.uuid, n.locked) for n in repo.dag.nodes.values()) == \
        sorted((n.id, n.uuid, n.locked) for n in full.dag.nodes.values())
    store.close()


def test_sigkill_mid_write_then_every_chunk_is_writable(store_location, tmp_path, monkeypatch):
    monkeypatch.setattr(writers, "LEASE_TTL", 2.0)
    store = _open(store_location)
    repo = store.create_repo("conc")
    repo.create_array("img", "uint8", (64, 64, 64), chunks=(16, 16, 16))
    store.close()
    started = tmp_path / "started"
    go = tmp_path / "go-crash"
    go.touch()
    proc = _spawn(store_location, "crash", go, 1, {"started": str(started)},
                  env={"DICED_LEASE_TTL": "2"})
    try:
        deadline = time.monotonic() + 300
        while not started.exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the writer never started"
            time.sleep(0.01)
        time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    store = _open(store_location)
    arr = store.open_repo("conc").array("img")
    before = arr[...]
    # every chunk is whole-valued (one generation) and takes partial writes again
    for idx in np.ndindex(4, 4, 4):
        box = tuple(slice(i * 16, (i + 1) * 16) for i in idx)
        assert len(np.unique(before[box])) == 1
    arr[1:63, 1:63, 1:63] = 250
    expect = before.copy()
    expect[1:63, 1:63, 1:63] = 250
    assert np.array_equal(arr[...], expect)
    store.close()


# --- in-process checks of the protocol ------------------------------------------------------


def test_interrupted_write_leaves_chunk_writable(store_location):
    """A value stored without its index entry (a crash between the two) is ignored by
    readers and writers alike, and the next partial write of the chunk succeeds."""
    store = _open(store_location)
    repo = store.create_repo("conc")
    arr = repo.create_array("img", "uint8", (32, 32), chunks=(16, 16))
    arr[0:16, 0:16] = 5
    inst, vid = arr._space.inst, repo.head.id
    written = K.data_key(inst, K.chunk_ckey((0, 0)), vid)
    # an orphan value (as a crashed writer leaves it) at a chunk the version never indexed
    store.backend.set(K.data_key(inst, K.chunk_ckey((1, 1)), vid), store.backend.get(written))
    arr[20:24, 20:24] = 9
    got = arr[...]
    expect = np.zeros((32, 32), np.uint8)
    expect[0:16, 0:16] = 5
    expect[20:24, 20:24] = 9
    assert np.array_equal(got, expect)
    store.close()


def test_unsafe_backend_refuses_writes(store_location):
    store = _open(store_location)
    repo = store.create_repo("conc")
    arr = repo.create_array("img", "uint8", (32, 32), chunks=(16, 16))
    store.backend.capabilities = diced.backends.Capabilities()  # as an fsspec fs without CAS
    with pytest.raises(ConcurrencyError, match="conditional writes"):
        arr[0:4, 0:4] = 1
    store.backend.capabilities = store.backend.raw.capabilities
    assert not arr[...].any()
    store.close()


@pytest.mark.backends("s3", "gcs")
def test_lock_version_waits_for_a_lease_holder(store_location):
    store = _open(store_location)
    repo = store.create_repo("conc")
    repo.create_array("img", "uint8", (32, 32), chunks=(16, 16))
    vid = repo.head.id
    held = threading.Event()
    free = threading.Event()

    def hold() -> None:
        with writers._Leases(store.backend, repo.uuid, vid, [3]):
            held.set()
            free.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(30)
    done = threading.Event()

    def lock() -> None:
        writers.lock_version(store.backend, repo.uuid, vid)
        done.set()

    locker = threading.Thread(target=lock)
    locker.start()
    time.sleep(1.0)
    assert not done.is_set()  # still waiting for the writer
    free.set()
    t.join(30)
    locker.join(30)
    assert done.is_set()
    assert store.backend.get(K.lease_key(repo.uuid, 3)) is None
    with pytest.raises(LockedNodeError):
        repo.array("img")[0, 0] = 1
    store.close()


@pytest.mark.backends("s3", "gcs")
def test_abandoned_lease_is_taken_over(store_location, monkeypatch):
    monkeypatch.setattr(writers, "LEASE_TTL", 0.5)
    store = _open(store_location)
    repo = store.create_repo("conc")
    arr = repo.create_array("img", "uint8", (64, 64), chunks=(16, 16))
    vid = repo.head.id
    dead = f"deadbeef {vid} 0".encode()
    for s in range(writers._LEASE_STRIPES):  # a dead writer's leases on every stripe
        store.backend.set(K.lease_key(repo.uuid, s), dead)
    arr[...] = 3
    assert (arr[...] == 3).all()
    # the stripes the write needed were taken over and released; the others still wait
    left = store.backend.get_many([K.lease_key(repo.uuid, s)
                                   for s in range(writers._LEASE_STRIPES)])
    assert all(v in (None, dead) for v in left) and left.count(None) > 0
    store.close()


class _Clock:
    """A stand-in for the ``time`` module of :mod:`diced.repo.writers`: ``sleep`` only
    moves ``monotonic`` on, so waits are counted, not spent."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.backends("s3", "gcs")
def test_a_dead_writers_leases_go_stale_together(store_location, monkeypatch):
    """A writer that needs several stripes a dead writer left waits one LEASE_TTL in all,
    not one per stripe in turn (with the default 30 s, up to 16 x 30 s: eight minutes,
    before the fix)."""
    clock = _Clock()
    monkeypatch.setattr(writers, "time", clock)
    monkeypatch.setattr(writers, "LEASE_TTL", 3.0)
    store = _open(store_location)
    repo = store.create_repo("conc")
    arr = repo.create_array("img", "uint8", (64, 64), chunks=(16, 16))
    dead = f"deadbeef {repo.head.id} 0".encode()
    for s in range(writers._LEASE_STRIPES):
        store.backend.set(K.lease_key(repo.uuid, s), dead)
    start = clock.now
    arr[...] = 3  # 16 chunks: several stripes, all held by the dead writer
    taken = store.backend.get_many([K.lease_key(repo.uuid, s)
                                    for s in range(writers._LEASE_STRIPES)]).count(None)
    assert taken >= 3  # it did wait for several stripes (taken over, then released)
    assert writers.LEASE_TTL <= clock.now - start < 1.5 * writers.LEASE_TTL
    assert (arr[...] == 3).all()
    store.close()


@pytest.mark.backends("file")
def test_file_process_locks_exclude_and_share(store_location):
    backend = store_location.open()
    events: list[str] = []
    inside = threading.Event()

    def holder() -> None:
        with backend.hold_locks(exclusive=["s-1"]):
            inside.set()
            time.sleep(0.5)
            events.append("released")

    t = threading.Thread(target=holder)
    t.start()
    inside.wait(10)
    with backend.hold_locks(exclusive=["s-1"]):  # waits for the holder
        events.append("acquired")
    t.join(10)
    assert events == ["released", "acquired"]
    with backend.hold_locks(shared=["v-1"]), backend.hold_locks(shared=["v-1"]):
        pass  # shared holders do not wait for each other
    with pytest.raises(diced.errors.InvalidArgumentError), backend.hold_locks(exclusive=["../x"]):
        pass
    backend.close()


@pytest.mark.backends("s3")
def test_backends_without_process_locks_say_so(store_location):
    backend = store_location.open()
    with pytest.raises(diced.errors.BackendError, match="no process locks"):
        backend.hold_locks(exclusive=["x"])
    backend.close()


@pytest.mark.backends("lmdb", "memory", "file", "s3", "gcs")
def test_commit_waits_for_a_write_under_way(store_location):
    """A write that passed its lock check before the commit lands before ``commit()``
    returns (deterministic: the write is held inside its read-modify-write)."""
    from diced.repo.resolve import VersionedSpace

    store = _open(store_location)
    repo = store.create_repo("conc")
    vid = repo.head.id
    space = VersionedSpace(store.backend, 4242, "probe", kind="key")
    entered, release, committed = threading.Event(), threading.Event(), threading.Event()

    def fn(ckey: str, base: bytes | None) -> bytes:
        entered.set()
        release.wait(30)
        return b"in flight"

    writer = threading.Thread(target=lambda: space.modify(repo._ctx(vid), ["k1"], fn))
    writer.start()
    assert entered.wait(30)
    committer = threading.Thread(target=lambda: (repo.commit("lock"), committed.set()))
    committer.start()
    time.sleep(1.0)
    assert not committed.is_set()  # commit waits for the write under way
    release.set()
    writer.join(30)
    committer.join(60)
    assert committed.is_set()
    assert space.read_many(["k1"], repo._ctx(vid)) == [b"in flight"]
    with pytest.raises(LockedNodeError):
        space.modify(repo._ctx(vid), ["k2"], lambda c, b: b"late")
    store.close()
