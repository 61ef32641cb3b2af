"""Stored values carry checksums; corruption is named; old stores migrate; store locations."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest

import diced
from diced.backends.checksum import TRAILER, ChecksummedBackend, frame, verify_value
from diced.errors import (
    ChecksumError,
    CorruptDataError,
    StoreFormatError,
    StoreLocationError,
    StoreNotFoundError,
)
from diced.repo import keys as K
from diced.testing.backend_conformance import BackendConformance

DATA = Path(__file__).parent / "data"


def _open(location, **kw):
    return diced.Store(location, **{**location.options, **kw})


def _fill(store):
    repo = store.create_repo("fly")
    gray = repo.create_array("gray", "uint8", (40, 70, 70), chunks=(32, 32, 32))
    rng = np.random.default_rng(7)
    gray[...] = rng.integers(0, 255, (40, 70, 70), dtype=np.uint8)
    seg = repo.create_labels("seg", (64, 64, 64), chunks=(32, 32, 32))
    lab = np.zeros((64, 64, 64), np.uint64)
    lab[:20] = 7
    lab[20:, :30] = 9
    seg[...] = lab
    kv = repo.create_keyvalue("files")
    kv["a/b.json"] = b'{"x": 1}'
    first = repo.commit("first")
    return repo, first


def _flip(raw, key: str, at: int = 0) -> None:
    value = bytearray(raw.get(key))
    value[at] ^= 0x10
    raw.set(key, bytes(value))


def _chunk_keys(store, inst: int) -> list[str]:
    return [k for k in store.raw_backend.list_keys(K.data_prefix(inst)) if k.endswith("d")]


# --- item 7: every value checksummed, checked on read ---------------------------------------


@pytest.mark.all_backends
def test_every_stored_value_carries_a_checksum(store_location):
    store = _open(store_location)
    _fill(store)
    raw = store.raw_backend
    keys = list(raw.list_keys())
    assert {k.split("/")[0] for k in keys} >= {"meta", "d", "w", "lock"}
    for key, value in zip(keys, raw.get_many(keys), strict=True):
        assert verify_value(value), key
    store.close()


@pytest.mark.all_backends
def test_a_flipped_bit_in_a_chunk_is_an_error_not_wrong_data(store_location):
    store = _open(store_location)
    repo, first = _fill(store)
    gray = repo.array("gray")
    before = gray[...]
    key = _chunk_keys(store, gray._space.inst)[2]
    ckey = K.parse_data_key(key)[0]
    _flip(store.raw_backend, key, at=len(store.raw_backend.get(key)) // 2)
    # chunks of locked versions read (and verified) before the flip are served from the
    # process's chunk cache; drop them so the reads below go to the damaged bytes
    from diced.backends.cache import chunk_cache
    chunk_cache().clear()
    for read in (lambda: gray[...], lambda: gray.read_chunks([K.parse_chunk_ckey(ckey)]),
                 lambda: store.open_repo("fly").version(first.uuid).array("gray")[...]):
        with pytest.raises(ChecksumError) as exc:
            read()
        err = exc.value
        assert isinstance(err, CorruptDataError) and isinstance(err, ValueError)
        assert err.instance == "gray"
        assert err.version == first.uuid
        assert err.key == K.parse_chunk_ckey(ckey)
        assert "'gray'" in str(err) and first.uuid in str(err)
        assert str(K.parse_chunk_ckey(ckey)) in str(err)
    # the damage is limited to that chunk: the others read as written
    lo = [c * 32 for c in K.parse_chunk_ckey(ckey)]
    sel = tuple(slice(a, a + 32) for a in lo)
    for coords in ((0, 0, 0), (1, 1, 1), (0, 2, 0)):
        if list(coords) != [c // 32 for c in lo]:
            box = tuple(slice(c * 32, c * 32 + 32) for c in coords)
            np.testing.assert_array_equal(gray[box], before[box])
    with pytest.raises(ChecksumError):
        gray[sel]
    store.close()


def test_corrupt_label_block_index_and_keyvalue_are_named(store_location):
    store = _open(store_location)
    repo, first = _fill(store)
    seg = repo.labels("seg")
    block = _chunk_keys(store, seg._space.inst)[0]
    _flip(store.raw_backend, block)
    with pytest.raises(ChecksumError) as exc:
        seg[...]
    assert exc.value.instance == "seg" and exc.value.version == first.uuid
    # the label index: a flipped bit, then a well-framed value of the wrong length
    idx = _chunk_keys(store, seg._index.inst)[0]
    _flip(store.raw_backend, idx)
    with pytest.raises(ChecksumError) as exc:
        seg.count(7)
    assert exc.value.instance == "seg (label index)" and exc.value.key == 7
    store.backend.set(idx, b"12345")
    with pytest.raises(CorruptDataError) as exc:
        seg.count(7)
    assert exc.value.instance == "seg (label index)" and "label 7" in str(exc.value)
    kv = repo.keyvalue("files")
    _flip(store.raw_backend, _chunk_keys(store, kv._space.inst)[0])
    with pytest.raises(ChecksumError) as exc:
        kv["a/b.json"]
    assert exc.value.instance == "files" and exc.value.key == "a/b.json"
    store.close()


def test_corrupt_metadata_is_caught(store_location):
    store = _open(store_location)
    repo, _ = _fill(store)
    _flip(store.raw_backend, K.repo_key(repo.uuid), at=3)
    with pytest.raises(ChecksumError):
        store.open_repo("fly")
    store.close()


def test_truncated_value_is_a_checksum_error(store_location):
    store = _open(store_location)
    repo, _ = _fill(store)
    kv = repo.keyvalue("files")
    key = _chunk_keys(store, kv._space.inst)[0]
    store.raw_backend.set(key, b"ab")
    with pytest.raises(ChecksumError, match="shorter than its checksum"):
        kv["a/b.json"]
    store.close()


def test_frame_roundtrip_and_zero_copy_views():
    from diced.backends.checksum import unframe, unframe_view

    for value in (b"", b"x", bytes(range(256)) * 100):
        framed = frame(value)
        assert len(framed) == len(value) + TRAILER and verify_value(framed)
        assert unframe("k", framed) == value
        view = unframe_view("k", memoryview(framed))
        assert isinstance(view, memoryview) and view.obj is framed and bytes(view) == value
    assert frame(b"123456789")[-4:] == (0xE3069283).to_bytes(4, "little")  # CRC32C check value
    with pytest.raises(ChecksumError):
        unframe("k", b"\x00" + frame(b"abc")[1:])


def test_checksummed_backend_keeps_atomic_update_and_cas(tmp_path):
    from diced.backends import open_backend

    backend = ChecksummedBackend(open_backend(str(tmp_path / "s")))
    backend.set("a", b"1")
    assert backend.update(["a", "b"], lambda cur: {"a": cur["a"] + b"!", "b": b"new"}) == {
        "a": b"1!", "b": b"new"}
    assert backend.get_many(["a", "b"]) == [b"1!", b"new"]
    assert backend.compare_and_set("a", b"1!", b"2") and not backend.compare_and_set("a", b"x", b"3")
    assert backend.raw.get("a") == frame(b"2")
    backend.close()


class TestChecksummedConformance(BackendConformance):
    """The checksum layer is a backend like any other: the whole conformance suite."""

    @pytest.fixture(params=["lmdb", "memory", "file"])
    def backend(self, request, tmp_path):
        from diced.backends import open_backend

        loc = {"lmdb": str(tmp_path / "s"), "memory": f"memory://crc-{uuid.uuid4().hex}",
               "file": (tmp_path / "f").as_uri()}[request.param]
        b = ChecksummedBackend(open_backend(loc))
        yield b
        b.close()

    @pytest.fixture
    def many_keys_count(self) -> int:
        return 2000


# --- item 7: format bump and migration --------------------------------------------------------


def _format1_copy(tmp_path: Path) -> Path:
    path = tmp_path / "format1.diced"
    path.mkdir()
    shutil.copy(DATA / "format1" / "data.mdb", path / "data.mdb")
    return path


def _format1_expected() -> tuple[np.ndarray, np.ndarray]:
    gray = (np.arange(40 * 70 * 70) % 251).astype(np.uint8).reshape(40, 70, 70)
    lab = np.zeros((64, 64, 64), np.uint64)
    lab[:20] = 7
    lab[20:, :30] = 9
    lab[40:, 40:, 40:] = 11
    return gray, lab


def test_store_of_format_1_is_refused_with_the_way_out(tmp_path):
    path = _format1_copy(tmp_path)
    before = (path / "data.mdb").read_bytes()
    with pytest.raises(StoreFormatError, match="diced migrate") as exc:
        diced.Store(path)
    assert str(path) in str(exc.value) and "format 1" in str(exc.value)
    assert (path / "data.mdb").read_bytes() == before  # nothing was changed


def test_store_of_format_1_migrates(tmp_path):
    path = _format1_copy(tmp_path)
    store = diced.Store(path, migrate=True)
    raw = store.raw_backend
    assert all(verify_value(v) for v in raw.get_many(list(raw.list_keys())))
    repo = store.open_repo("fly")
    gray, lab = _format1_expected()
    first = repo.version("master")
    np.testing.assert_array_equal(first.array("gray")[...], gray)
    np.testing.assert_array_equal(first.labels("seg")[...], lab)
    assert first.keyvalue("files").items() == [("a/b.json", b'{"x": 1}'), ("empty", b"")]
    edit = repo.version(branch="edit")
    gray[0, 0, 0:5] = 200
    np.testing.assert_array_equal(edit.array("gray")[...], gray)
    merged = np.where(lab == 9, 7, lab)
    np.testing.assert_array_equal(edit.labels("seg")[...], merged)
    assert edit.labels("seg").count(7) == int((lab == 7).sum() + (lab == 9).sum())
    assert edit.keyvalue("files").items() == [("a/b.json", b'{"x": 1}'), ("c", b"see")]
    store.close()
    again = diced.Store(path)  # no migrate= needed any more
    assert again.open_repo("fly").version("master").array("gray")[0, 0, 0] == 0
    assert diced.Store(path, migrate=True).raw_backend.get(K.MIGRATE_KEY) is None


def _downgrade_to_format_1(raw) -> None:
    """What diced before checksums stored: every value without its trailer."""
    keys = list(raw.list_keys())
    values = raw.get_many(keys)
    raw.set_many({k: v[:-TRAILER] for k, v in zip(keys, values, strict=True)})
    raw.set(K.FORMAT_KEY, b'{"created":1,"format":1}')


def test_interrupted_migration_resumes(store_location, monkeypatch):
    import diced.migrate as M

    store = _open(store_location)
    repo, first = _fill(store)
    want = repo.array("gray")[...]
    store.close()
    backend = store_location.open()
    _downgrade_to_format_1(backend)
    with pytest.raises(StoreFormatError):
        _open(store_location)
    monkeypatch.setattr(M, "BATCH_KEYS", 3)
    calls = {"n": 0}
    real = type(backend).set_many

    def crash_on_third(self, items):
        calls["n"] += 1
        if calls["n"] == 3:  # a crash half-way through one batch
            real(self, dict(list(items.items())[:1]))
            raise RuntimeError("crash")
        return real(self, items)

    monkeypatch.setattr(type(backend), "set_many", crash_on_third)
    with pytest.raises(RuntimeError, match="crash"):
        M.migrate_store(backend)
    monkeypatch.setattr(type(backend), "set_many", real)
    with pytest.raises(StoreFormatError):  # half migrated: still refused
        _open(store_location)
    assert M.migrate_store(backend) > 0
    backend.close()
    store = _open(store_location)
    np.testing.assert_array_equal(store.open_repo("fly").version(first.uuid).array("gray")[...],
                                  want)
    raw = store.raw_backend
    assert all(verify_value(v) for v in raw.get_many(list(raw.list_keys())))
    store.close()


def test_unknown_future_format_is_refused(store_location):
    store = _open(store_location)
    store.backend.set(K.FORMAT_KEY, b'{"format": 99}')
    store.close()
    with pytest.raises(StoreFormatError, match="99"):
        _open(store_location)
    with pytest.raises(StoreFormatError, match="cannot migrate"):
        _open(store_location, migrate=True)


# --- item 11: where stores may be made --------------------------------------------------------


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.mark.parametrize("scheme", ["lmdb", "file"])
def test_store_on_a_regular_file_or_below_one(tmp_path, scheme):
    afile = tmp_path / "notes.txt"
    afile.write_text("hello")
    for target in (afile, afile / "store"):
        loc = str(target) if scheme == "lmdb" else target.as_uri()
        with pytest.raises(StoreLocationError) as exc:
            diced.Store(loc)
        assert str(target) in str(exc.value)
        assert isinstance(exc.value, OSError)
    assert afile.read_text() == "hello"


@pytest.mark.parametrize("scheme", ["lmdb", "file"])
def test_store_in_an_unreadable_directory(tmp_path, scheme, monkeypatch):
    target = tmp_path / "locked"
    target.mkdir()
    real = os.listdir

    def denied(path=".", *a):
        if Path(path) == target:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *a)

    monkeypatch.setattr(os, "listdir", denied)
    loc = str(target) if scheme == "lmdb" else target.as_uri()
    with pytest.raises(StoreLocationError, match="Permission denied") as exc:
        diced.Store(loc)
    assert str(target) in str(exc.value)


@pytest.mark.parametrize("scheme", ["lmdb", "file"])
def test_non_empty_directory_that_is_not_a_store_is_refused(tmp_path, scheme):
    target = tmp_path / "photos"
    target.mkdir()
    (target / "cat.jpg").write_bytes(b"meow")
    loc = str(target) if scheme == "lmdb" else target.as_uri()
    with pytest.raises(StoreLocationError, match="not empty|non-empty") as exc:
        diced.Store(loc)
    assert str(target) in str(exc.value)
    assert _tree(target) == {"cat.jpg"}  # nothing created inside
    store = diced.Store(loc, create=True)  # explicit consent
    store.create_repo("fly")
    store.close()
    assert diced.Store(loc).list_repos()[0][0] == "fly"  # a store now: opens without create


@pytest.mark.parametrize("scheme", ["lmdb", "file"])
def test_empty_or_new_directory_makes_a_store(tmp_path, scheme):
    for target in (tmp_path / "empty", tmp_path / "new" / "deeper"):
        if target.name == "empty":
            target.mkdir()
        loc = str(target) if scheme == "lmdb" else target.as_uri()
        diced.Store(loc).close()
        assert diced.Store(loc, create=False).list_repos() == []


def test_create_false_never_makes_a_store(store_location, tmp_path):
    with pytest.raises(StoreNotFoundError) as exc:
        _open(store_location, create=False)
    assert isinstance(exc.value, KeyError)
    if store_location.kind == "lmdb":
        assert not Path(store_location).exists()
    with pytest.raises(StoreNotFoundError):
        diced.Store(tmp_path / "nothing", create=False)
    assert not (tmp_path / "nothing").exists()
    _open(store_location).close()
    _open(store_location, create=False).close()


def test_memory_location_holding_other_keys_is_refused():
    from diced.backends import open_backend

    raw = open_backend("memory://diced-not-a-store")
    raw.set("someone/elses", b"data")
    with pytest.raises(StoreLocationError):
        diced.Store("memory://diced-not-a-store")
    assert list(raw.list_keys()) == ["someone/elses"]
    raw.delete("someone/elses")


# --- item 9: verify and repair ----------------------------------------------------------------


def _scene(store):
    """A repo with a locked version and an open branch on top, all kinds of instances."""
    repo, first = _fill(store)
    edit = repo.branch("edit")
    gray, seg, kv = repo.array("gray"), repo.labels("seg"), repo.keyvalue("files")
    gray[0:32, 0:32, 0:32] = 5
    seg[0:32, 32:64, 0:32] = 12
    kv["c"] = b"see"
    return repo, first, edit


def _written_at(store, space, vid: int) -> list[str]:
    return [k for k in store.raw_backend.list_keys(K.data_prefix(space.inst))
            if k.endswith("d") and K.parse_data_key(k)[1] == vid]


def test_verify_clean_store(store_location):
    store = _open(store_location)
    _scene(store)
    report = store.verify()
    assert report.ok and not report.problems, [str(p) for p in report.problems]
    assert report.values > 20 and report.chunks > 5 and report.label_versions >= 2
    assert "OK" in report.summary()
    store.close()


def test_verify_finds_and_repairs_corruption(store_location):
    from diced.datatypes.labels._common import encode_index

    store = _open(store_location)
    repo, first, edit = _scene(store)
    raw = store.raw_backend
    gray, seg, kv = repo.array("gray"), repo.labels("seg"), repo.keyvalue("files")
    locked_chunk = _written_at(store, gray._space, first.id)[1]
    open_chunk = _written_at(store, gray._space, edit.id)[0]
    open_block = _written_at(store, seg._space, edit.id)[0]
    open_kv = _written_at(store, kv._space, edit.id)[0]
    _flip(raw, locked_chunk)
    _flip(raw, open_chunk, at=5)
    _flip(raw, open_kv)
    store.backend.set(open_block, b"not a label block")  # good checksum, bad bytes
    # a label index that disagrees with the blocks, at the locked and at the open version
    lk_locked = _written_at(store, seg._index, first.id)[0]
    store.backend.set(lk_locked, encode_index({(0, 0, 0): 1}))
    lk_open = f"{7:016x}"
    seg._index.write(repo._ctx(edit.id), {lk_open: encode_index({(1, 1, 1): 3})})
    locked_before = raw.get(locked_chunk)

    report = store.verify()
    assert not report.ok
    kinds = {(p.kind, p.instance, p.version) for p in report.problems}
    assert ("checksum", "gray", first.uuid) in kinds
    assert ("checksum", "gray", edit.uuid) in kinds
    assert ("checksum", "files", edit.uuid) in kinds
    assert ("undecodable", "seg", edit.uuid) in kinds
    assert ("label-index", "seg (label index)", first.uuid) in kinds
    assert ("label-index", "seg (label index)", edit.uuid) in kinds
    bad = next(p for p in report.problems if p.store_key == locked_chunk)
    assert bad.key == K.parse_chunk_ckey(K.parse_data_key(locked_chunk)[0]) and bad.locked
    assert bad.repo == "fly"
    assert all(not p.repaired for p in report.problems)

    fixed = store.verify(repair=True)
    for p in fixed.problems:
        assert p.repaired == (p.version == edit.uuid), str(p)
    assert raw.get(locked_chunk) == locked_before  # locked data untouched
    assert raw.get(open_chunk) is None and raw.get(open_kv) is None
    # the open version reads again: the parent's values show through
    repo = store.open_repo("fly", version=edit.uuid)
    assert K.parse_data_key(open_chunk)[0] == K.chunk_ckey((0, 0, 0))
    np.testing.assert_array_equal(repo.array("gray")[0:32, 0:32, 0:32],
                                  repo.version(first.uuid).array("gray")[0:32, 0:32, 0:32])
    assert repo.keyvalue("files").get("c") is None
    seg = repo.labels("seg")
    vol = seg.read(supervoxels=True)
    for lab in (7, 9, 12):
        assert seg.count(lab, supervoxels=True) == int((vol == lab).sum())
    again = store.verify()
    assert {p.version for p in again.problems} == {first.uuid}
    store.close()


def test_verify_one_version(store_location):
    store = _open(store_location)
    repo, first, edit = _scene(store)
    gray = repo.array("gray")
    _flip(store.raw_backend, _written_at(store, gray._space, edit.id)[0])
    assert store.verify("fly", first.uuid).ok  # the corruption is not in its history
    repo.checkout("edit")
    repo.create_labels("late", (64, 64, 64))[0:8, 0:8, 0:8] = 3  # not visible at first
    assert store.verify("fly", first.uuid).ok
    report = store.verify("fly", "edit")
    assert [p.version for p in report.problems] == [edit.uuid]
    with pytest.raises(diced.errors.InvalidArgumentError):
        store.verify(version="edit")
    store.close()


def test_cli_verify(tmp_path, capsys):
    import json

    from diced.cli import main

    loc = str(tmp_path / "s.diced")
    store = diced.Store(loc)
    repo, _, edit = _scene(store)
    gray = repo.array("gray")
    key = _written_at(store, gray._space, edit.id)[0]
    store.close()
    assert main(["verify", loc]) == 0
    assert "OK" in capsys.readouterr().out
    raw = diced.backends.open_backend(loc)
    _flip(raw, key)
    raw.close()
    assert main(["verify", loc, "fly", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert not out["ok"] and out["problems"][0]["instance"] == "gray"
    assert out["problems"][0]["version"] == edit.uuid
    assert main(["verify", loc, "--repair"]) == 0
    assert "repaired" in capsys.readouterr().out
    assert main(["verify", loc]) == 0
    missing = tmp_path / "missing.diced"
    assert main(["verify", str(missing)]) == 2
    assert not missing.exists()


def test_cli_migrate(tmp_path, capsys):
    from diced.cli import main

    path = _format1_copy(tmp_path)
    assert main(["verify", str(path)]) == 2  # refused: old format
    assert "diced migrate" in capsys.readouterr().err
    assert main(["migrate", str(path)]) == 0
    assert "migrated from format 1 to 3" in capsys.readouterr().out
    assert main(["migrate", str(path)]) == 0
    assert "already" in capsys.readouterr().out
    assert main(["verify", str(path)]) == 0


def test_corrupt_label_index_met_by_a_write_is_named(store_location):
    store = _open(store_location)
    repo, _ = _fill(store)
    repo.branch("b")
    seg = repo.labels("seg")
    idx = _chunk_keys(store, seg._index.inst)[0]
    store.backend.set(idx, b"123")  # a good checksum over bytes that are no index entry
    with pytest.raises(CorruptDataError) as exc:
        seg[0:32, 0:32, 0:32] = 5  # the write updates label 7's index entry
    assert exc.value.instance == "seg (label index)" and exc.value.key == 7
    assert not isinstance(exc.value, ChecksumError)
    store.close()
