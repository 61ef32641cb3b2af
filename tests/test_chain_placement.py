"""Per-instance storage placement (DVID's per-instance stores): label arrays on the local
LMDB store, grayscale on ``file://`` or ``s3://`` (moto), in one repo."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

import diced
from diced.backends import open_backend
from diced.backends.routed import RoutedBackend
from diced.errors import DuplicateNameError, InvalidArgumentError, StoreLocationError
from diced.repo.resolve import VersionedSpace
from diced.testing.backend_conformance import BackendConformance

SRC = str(Path(diced.__file__).resolve().parents[1])
SHAPE = (64, 64, 64)


def _gray() -> np.ndarray:
    return (np.arange(np.prod(SHAPE), dtype=np.uint64).reshape(SHAPE) % 253).astype(np.uint8)


class TestRoutedConformance(BackendConformance):
    """The conformance suite's chunk-like keys live in key space 10: routed elsewhere."""

    @pytest.fixture
    def backend(self, tmp_path):
        b = RoutedBackend(open_backend(str(tmp_path / "main")),
                          {10: open_backend((tmp_path / "target").as_uri())})
        yield b
        b.close()

    @pytest.fixture
    def reopen_backend(self, tmp_path):
        made = []

        def reopen():
            b = RoutedBackend(open_backend(str(tmp_path / "main")),
                              {10: open_backend((tmp_path / "target").as_uri())})
            made.append(b)
            return b

        yield reopen
        for b in made:
            b.close()


@pytest.fixture(params=["file", "s3"])
def target_url(request, tmp_path):
    if request.param == "file":
        return (tmp_path / "gray-target").as_uri()
    emulator = request.getfixturevalue("s3_emulator")
    return f"s3://{emulator.bucket}/{uuid.uuid4().hex}"


def _keys(url: str) -> list[str]:
    with open_backend(url) as b:
        return list(b.list_keys())


def test_placed_array_lives_on_its_target(tmp_path, target_url):
    main = str(tmp_path / "main.diced")
    with diced.Store(main) as store:
        repo = store.create_repo("fly")
        gray = repo.create_array("gray", "uint8", SHAPE, chunks=(32, 32, 32),
                                 storage=target_url)
        seg = repo.create_labels("seg", SHAPE, chunks=(32, 32, 32))
        gray[:] = _gray()
        seg[:32] = 5
        v1 = repo.commit("v1").uuid
        repo.newversion("v2")
        gray[:16] = 1
        seg[48:] = 6
        repo.commit("v2")
        gid = repo._doc["instances"]["gray"]["id"]
        sid = repo._doc["instances"]["seg"]["id"]
        # labels keep LMDB's ordered scans; the object store's space uses manifests
        assert VersionedSpace(store.backend, sid).ordered
        assert VersionedSpace(store.backend, gid).ordered == (not target_url.startswith(
            ("s3://", "file://")))
        assert repo._doc["instances"]["gray"]["storage"] == target_url
        assert store.verify().ok
    target = _keys(target_url)
    assert any(k.startswith(f"d/{gid:08x}/") for k in target)
    assert any(k.startswith(f"w/{gid:08x}/") for k in target)
    assert not any(k.startswith(f"d/{sid:08x}/") for k in target)
    with open_backend(main) as raw:  # the main store holds no gray chunk
        assert list(raw.list_keys(f"d/{gid:08x}/")) == []
        assert list(raw.list_keys(f"d/{sid:08x}/"))

    code = (
        "import numpy as np, diced\n"
        f"s = diced.Store({main!r}, create=False)\n"
        "r = s.open_repo('fly')\n"
        f"old = r.version({v1!r}).array('gray')[:]\n"
        "new = r.array('gray')[:]\n"
        "assert (new[:16] == 1).all() and (new[16:] == old[16:]).all()\n"
        "assert int(old[:16].sum()) > 0\n"
        "assert set(np.unique(r.labels('seg')[:])) == {0, 5, 6}\n"
        "assert s.verify().ok\n"
        "print('ok')\n")
    env = {"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"}
    if target_url.startswith("s3://"):
        # the new process reaches moto through fsspec's config, as a user's would
        import json

        conf = tmp_path / "fsspec-conf"
        conf.mkdir()
        from fsspec.config import conf as live

        (conf / "s3.json").write_text(json.dumps({"s3": live["s3"]}))
        env["FSSPEC_CONFIG_DIR"] = str(conf)
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                         text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_export_of_a_placed_array(tmp_path, target_url):
    pytest.importorskip("zarr")
    from diced.export import export_zarr

    with diced.Store(tmp_path / "main.diced") as store:
        repo = store.create_repo("fly")
        gray = repo.create_array("gray", "uint8", SHAPE, chunks=(32, 32, 32),
                                 storage=target_url)
        gray[:] = _gray()
        export_zarr(gray, tmp_path / "out.zarr", progress=False)
    import zarr

    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["0"],
                                  _gray())


def test_another_handle_sees_a_new_placement(tmp_path):
    main = str(tmp_path / "main.diced")
    target = (tmp_path / "t").as_uri()
    with diced.Store(main) as a, diced.Store(main) as b:
        ra = a.create_repo("fly")
        rb = b.open_repo("fly")
        arr = ra.create_array("gray", "uint8", SHAPE, storage=target)
        arr[:] = 3
        rb.refresh()
        assert (rb.array("gray")[:] == 3).all()
        rb.array("gray")[:1] = 4
        assert (arr[:1] == 4).all()
    with open_backend(main) as raw:
        assert list(raw.list_keys("d/")) == []


def test_two_instances_share_a_target_and_delete_cleans_it(tmp_path):
    target = str(tmp_path / "fast.lmdb")
    with diced.Store(tmp_path / "main.diced") as store:
        repo = store.create_repo("fly")
        a = repo.create_labels("seg", SHAPE, storage=target)
        b = repo.create_keyvalue("notes", storage=target)
        a[:8] = 2
        b["x"] = b"y"
        assert VersionedSpace(store.backend, repo._doc["instances"]["seg"]["id"]).ordered
        rec = repo._doc["instances"]["seg"]
        repo.delete_instance("seg")
        assert (repo.keyvalue("notes")["x"]) == b"y"
        assert rec["id"] not in store.raw_backend.routes
    with open_backend(target) as t:
        assert not [k for k in t.list_keys("d/") if k.startswith(f"d/{rec['id']:08x}/")]
        assert list(t.list_keys("d/"))  # the keyvalue's value is still there
    with diced.Store(tmp_path / "main.diced") as store:
        from diced.repo.repo import instance_spaces

        notes = store.open_repo("fly")._doc["instances"]["notes"]
        assert set(store.raw_backend.routes) == set(instance_spaces(notes))
        store.delete_repo("fly")  # drops the placed keyvalue and forgets its route
        assert not isinstance(store.raw_backend, RoutedBackend) or \
            store.raw_backend.routes == {}
    with diced.Store(tmp_path / "main.diced") as store:  # opens no target any more
        assert not isinstance(store.raw_backend, RoutedBackend)
    with open_backend(target) as t:
        assert list(t.list_keys("d/")) == []


def test_placement_errors_store_nothing(tmp_path):
    other = tmp_path / "other.diced"
    diced.Store(other).close()
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "file.txt").write_text("hello")
    with diced.Store(tmp_path / "main.diced") as store:
        repo = store.create_repo("fly")
        with pytest.raises(StoreLocationError, match="store of its own"):
            repo.create_array("a", "uint8", SHAPE, storage=str(other))
        with pytest.raises(StoreLocationError, match="not empty"):
            repo.create_array("a", "uint8", SHAPE, storage=junk.as_uri())
        with pytest.raises(InvalidArgumentError, match="own location"):
            repo.create_array("a", "uint8", SHAPE, storage=str(tmp_path / "main.diced"))
        with pytest.raises(InvalidArgumentError):
            repo.create_array("a", "uint8", SHAPE, storage=42)  # type: ignore[arg-type]
        assert repo.instances() == {}
        assert not isinstance(store.raw_backend, RoutedBackend)
        t = (tmp_path / "t").as_uri()
        repo.create_array("a", "uint8", SHAPE, storage=t)
        assert repo.create_array("a", "uint8", SHAPE, storage=t, exist_ok=True)
        with pytest.raises(DuplicateNameError, match="stored at"):
            repo.create_array("a", "uint8", SHAPE, storage=(tmp_path / "t2").as_uri(),
                              exist_ok=True)


def test_placement_in_a_chained_store(tmp_path):
    base = str(tmp_path / "base.diced")
    with diced.Store(base) as s:
        r = s.create_repo("fly")
        r.create_labels("seg", SHAPE)[:8] = 1
        r.commit("published")
    with open_backend(base) as b:
        before = list(b.list_keys())
    target = (tmp_path / "gray").as_uri()
    with diced.Store.chain(base, tmp_path / "local") as chain:
        repo = chain.open_repo("fly")
        repo.newversion("work")
        gray = repo.create_array("gray", "uint8", SHAPE, storage=target)
        gray[:] = 9
        repo.labels("seg")[8:16] = 2
        repo.commit("work")
    with diced.Store(tmp_path / "local") as again:
        assert again.is_chained
        r = again.open_repo("fly")
        assert (r.array("gray")[:] == 9).all()
        assert set(np.unique(r.labels("seg")[:])) == {0, 1, 2}
        assert again.verify().ok
    with open_backend(base) as b:
        assert list(b.list_keys()) == before
    assert any(k.startswith("d/") for k in _keys(target))


def test_chain_over_a_base_with_placed_instances(tmp_path):
    """The base's own placement is applied read-only; new versions write locally."""
    base = str(tmp_path / "base.diced")
    target = (tmp_path / "published-gray").as_uri()
    with diced.Store(base) as s:
        r = s.create_repo("fly")
        r.create_array("gray", "uint8", SHAPE, storage=target)[:] = _gray()
        r.commit("published")
    before = {u: _keys(u) for u in (base, target)}
    with diced.Store.chain(base, tmp_path / "local") as chain:
        repo = chain.open_repo("fly")
        np.testing.assert_array_equal(repo.array("gray")[:], _gray())
        repo.newversion("edit")
        repo.array("gray")[:4] = 0
        assert (repo.array("gray")[:4] == 0).all()
        repo.commit("edit")
        assert chain.verify().ok
    assert {u: _keys(u) for u in (base, target)} == before


def test_routed_update_spans_backends_atomically(tmp_path):
    """An update touching main and routed keys runs inside one main transaction: an error
    stores nothing anywhere, and threads incrementing a routed key lose no update."""
    import threading

    target = open_backend((tmp_path / "t").as_uri())  # no atomic updates of its own
    routed = RoutedBackend(open_backend(str(tmp_path / "main")), {10: target})
    assert routed.capabilities.atomic_update and not routed.capabilities.ordered_scan
    assert routed.capabilities_for("d/0000000b/").ordered_scan
    key, lock = "d/0000000a/c/00000001d", "lock/r/00000001"

    class Boom(Exception):
        pass

    def fail(cur):
        raise Boom

    with pytest.raises(Boom):
        routed.update([lock, key], fail)
    assert routed.get_many([lock, key]) == [None, None]

    def bump(cur):
        return {key: b"%d" % (int(cur[key] or b"0") + 1), lock: None}

    def work():
        for _ in range(50):
            routed.update([lock, key], bump)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert routed.get(key) == b"150"
    assert target.get(key) == b"150"  # it lives on the target
    routed.close()


def test_layer_options_by_url_or_protocol():
    from diced.backends.layers import options_for

    opts = {"s3://b/x": {"anon": True}, "s3": {"key": "k"}, "lmdb": {"durable": False}}
    assert options_for("s3://b/x", opts) == {"anon": True}
    assert options_for("s3://b/y", opts) == {"key": "k"}
    assert options_for("/some/path", opts) == {"durable": False}
    assert options_for("gs://b/x", opts) == {} and options_for("gs://b", None) == {}
