"""The datatype registry: lookups by diced and DVID names, registration rules, entry points
of installed packages, a third-party type through create/branch/merge/diff/delete, the
README's "Write your own datatype" example, and that the core imports no concrete type."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

import diced
from diced.datatypes import (
    ENTRY_POINT_GROUP,
    Datatype,
    InstanceContext,
    datatypes,
    get_datatype,
    register_datatype,
)
from diced.errors import (
    DuplicateNameError,
    InstanceNotFoundError,
    InvalidArgumentError,
    LockedNodeError,
    MergeConflictError,
    UnknownDatatypeError,
)
from diced.repo import keys as K

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def _run(code: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with ``paths`` and this tree's src on sys.path."""
    env_path = ":".join([*(str(p) for p in paths), str(SRC)])
    env = {**os.environ, "PYTHONPATH": env_path}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300, check=False)


# -- a small third-party type used by several tests ---------------------------------------------


class Tally:
    """Counters by name, at one version (the instance object of TallyType)."""

    def __init__(self, context: InstanceContext) -> None:
        self.context = context
        self.space = context.space()

    def add(self, name: str, n: int = 1) -> None:
        ck = K.kv_ckey(name)
        self.space.modify(self.context.ctx(), [ck], lambda _c, base: str(
            int(base or b"0") + n).encode())

    def __getitem__(self, name: str) -> int:
        raw = self.space.read_many([K.kv_ckey(name)], self.context.ctx())[0]
        return int(raw or b"0")

    def rename(self, label: str) -> None:
        def fn(rec):
            rec["config"]["label"] = label

        self.context.update_record(fn)


class TallyType(Datatype):
    name = "tally-test"
    dvid_names = ("tallyblk-test",)
    merged: ClassVar[list] = []

    def configure(self, vid, *, label: str = ""):
        if not isinstance(label, str):
            raise InvalidArgumentError("label must be a string")
        return {"label": label}

    def open(self, context):
        return Tally(context)

    def describe_key(self, ckey, suffix=""):
        return K.parse_kv_ckey(ckey)

    def after_merge(self, instance, ctx, touched, parents):
        type(self).merged.append(sorted(K.parse_kv_ckey(c) for c in touched))


@pytest.fixture(scope="module")
def tally_type():
    return register_datatype(TallyType, replace=True)



@pytest.fixture
def repo(store):
    return store.create_repo("dt")


# -- lookups --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), [
    ("array", "array"), ("uint8blk", "array"), ("uint16blk", "array"), ("float32blk", "array"),
    ("labels", "labels"), ("labelmap", "labels"), ("keyvalue", "keyvalue")])
def test_builtin_lookup(name, expected):
    dt = get_datatype(name)
    assert isinstance(dt, Datatype) and dt.name == expected
    assert get_datatype(expected) is dt


def test_datatypes_lists_builtins():
    known = datatypes()
    assert {"array", "labels", "keyvalue"} <= set(known)
    assert all(isinstance(v, Datatype) and v.name == k for k, v in known.items())


def test_dvid_typenames():
    arr, lab, kv = get_datatype("array"), get_datatype("labels"), get_datatype("keyvalue")
    assert arr.dvid_typename({"config": {"dtype": "|u1"}}) == "uint8blk"
    assert arr.dvid_typename({"config": {"dtype": "<u2"}}) == "uint16blk"
    assert lab.dvid_typename({"config": {}}) == "labelmap"
    assert kv.dvid_typename({}) == "keyvalue"
    assert (arr.http_routes, lab.http_routes, kv.http_routes) == (
        "diced.server.routes_array", "diced.server.routes_labels", "diced.server.routes_keyvalue")
    for name in ("annotation", "roi", "labelsz", "neuronjson"):
        assert get_datatype(name).http_routes == f"diced.server.routes_{name}"


def test_server_uses_the_registry(tally_type):
    pytest.importorskip("starlette")
    from diced.server.registry import TYPES, dvid_typename, load_builtin_types

    load_builtin_types()
    assert {"uint8blk", "labelmap", "keyvalue"} <= set(TYPES)
    assert dvid_typename({"type": "tally-test"}) == "tallyblk-test"  # a registered type
    assert dvid_typename({"type": "not-installed"}) == "not-installed"
    assert dvid_typename({"type": "annotation"}) == "annotation"


@pytest.mark.parametrize("bad", ["nope", "", 3, None])
def test_unknown_datatype(bad):
    with pytest.raises(UnknownDatatypeError) as exc:
        get_datatype(bad)
    assert isinstance(exc.value, KeyError) and exc.value.code == "unknown_datatype"


def test_register_rules(tally_type):
    assert get_datatype("tally-test") is tally_type
    assert get_datatype("tallyblk-test") is tally_type  # DVID alias
    assert register_datatype(TallyType) is not None  # same class again: fine

    class Other(Datatype):
        name = "tally-test"

    with pytest.raises(DuplicateNameError):
        register_datatype(Other)

    class Alias(Datatype):
        name = "alias-thief-test"
        dvid_names = ("labelmap",)

    get_datatype("labelmap")
    with pytest.raises(DuplicateNameError):
        register_datatype(Alias)
    assert get_datatype("labelmap").name == "labels"

    class Nameless(Datatype):
        pass

    with pytest.raises(InvalidArgumentError):
        register_datatype(Nameless)
    with pytest.raises(InvalidArgumentError):
        register_datatype(object())  # type: ignore[arg-type]


# -- creating instances through the registry ----------------------------------------------------


def test_create_instance_by_dvid_name(repo):
    g = repo.create_instance("g", "uint8blk", dtype="uint8", shape=(8, 8, 8))
    lab = repo.create_instance("seg", "labelmap", shape=(16, 16, 16), chunks=(8, 8, 8))
    kv = repo.create_instance("kv", "keyvalue")
    assert repo.instances() == {"g": "array", "kv": "keyvalue", "seg": "labels"}
    assert isinstance(g, diced.VersionedArray) and isinstance(lab, diced.LabelArray)
    assert isinstance(kv, diced.KeyValue)
    g[0] = 4
    lab[0:8, 0:8, 0:8] = 9
    assert int(g[0, 1, 2]) == 4 and lab.count(9) == 512


def test_create_instance_bad_input_stores_nothing(repo):
    with pytest.raises(UnknownDatatypeError):
        repo.create_instance("x", "no-such-type")
    with pytest.raises(InvalidArgumentError):
        repo.create_instance("x", "keyvalue", colour="red")  # keyvalue takes no options
    with pytest.raises(InvalidArgumentError):
        repo.create_instance("x", "array", shape=(4,))  # no dtype
    with pytest.raises(TypeError):
        repo.create_instance("x", "array", dtype="u1", shape=(4,), bogus=1)
    assert repo.instances() == {}


def test_config_is_validated_before_anything_is_stored(repo, tally_type):
    with pytest.raises(InvalidArgumentError):
        repo.create_instance("t", "tally-test", label=5)
    assert "t" not in repo


# -- a third-party type is versioned like the built-ins ----------------------------------------


def test_third_party_type_versions(repo, tally_type):
    t = repo.create_instance("t", "tallyblk-test", label="x")
    assert repo.instances() == {"t": "tally-test"}
    t.add("a", 2)
    base = repo.commit("base")
    repo.branch("left")
    t.add("a")
    t.add("b")
    left = repo.commit("left")
    repo.checkout(base.uuid)
    repo.branch("right")
    t.add("c", 5)
    right = repo.commit("right")
    TallyType.merged.clear()
    merged = repo.merge(left.uuid, right.uuid, note="m")
    assert TallyType.merged == [["a", "b", "c"]]  # after_merge saw every touched key
    m = repo.version(merged.uuid)["t"]
    assert (m["a"], m["b"], m["c"]) == (3, 1, 5)
    assert repo.version(base.uuid)["t"]["a"] == 2
    d = repo.diff(base.uuid, merged.uuid)["t"]
    assert sorted(d.added) == ["b", "c"] and d.changed == ["a"]
    # a conflict names the key as describe_key shows it
    repo.commit("merged")
    repo.branch("x")
    t.add("a", 10)
    x = repo.commit("x")
    repo.checkout(merged.uuid)
    repo.branch("y")
    t.add("a", 20)
    y = repo.commit("y")
    with pytest.raises(MergeConflictError) as exc:
        repo.merge(x.uuid, y.uuid)
    (c,) = exc.value.conflicts
    assert c.instance == "t" and c.key == "a"
    # the record updates with compare-and-set and is visible through the context
    repo.branch("z")
    t.rename("renamed")
    assert repo.store.open_repo("dt")._doc["instances"]["t"]["config"]["label"] == "renamed"
    assert t.context.config["label"] == "renamed"
    # locked versions refuse writes through the key space
    with pytest.raises(LockedNodeError):
        repo.version(x.uuid)["t"].add("a")


def test_instance_context(repo):
    kv = repo.create_keyvalue("kv")
    kv["k"] = b"1"
    v1 = repo.commit("one")
    repo.newversion()
    kv["k"] = b"2"
    ctx = kv._ref
    assert isinstance(ctx, InstanceContext) and not ctx.pinned
    assert ctx.version().uuid == repo.current_uuid and ctx.ctx().vid == repo.head.id
    pinned = ctx.at(v1.uuid)
    assert pinned.pinned and pinned.ctx().uuid == v1.uuid and pinned.ctx().locked
    assert ctx.ctx_at(v1.uuid) == pinned.ctx()
    assert ctx.open_at(v1.uuid)["k"] == b"1" and kv["k"] == b"2"
    assert ctx.id == ctx.record["id"] and ctx.config == {}
    assert ctx.next_counter("test") + 1 == ctx.next_counter("test")
    assert "kv" in repr(ctx)


# -- unknown types in a stored repo --------------------------------------------------------------


def test_stored_instance_of_uninstalled_type(store, repo):
    kv = repo.create_keyvalue("kv")
    kv["k"] = b"v"

    def fn(rec):
        rec["type"] = "gone-type"

    repo._update_instance("kv", fn)  # as a store written by a package not installed here
    again = store.open_repo("dt")
    assert again.instances() == {"kv": "gone-type"}
    with pytest.raises(UnknownDatatypeError, match="install"):
        again["kv"]
    again.delete_instance("kv")  # deleting it still works, and drops its data
    assert again.instances() == {}
    assert not list(store.backend.list_keys("d/"))
    with pytest.raises(InstanceNotFoundError):
        again["kv"]


# -- entry points ----------------------------------------------------------------------------


def _make_dist(root: Path) -> None:
    pkg = root / "diced_testplugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        import json
        from diced.datatypes import Datatype
        from diced.repo.keys import kv_ckey, parse_kv_ckey

        class Box:
            def __init__(self, context):
                self.context, self.space = context, context.space()
            def put(self, key, value):
                self.space.write(self.context.ctx(), {kv_ckey(key): json.dumps(value).encode()})
            def get(self, key):
                raw = self.space.read_many([kv_ckey(key)], self.context.ctx())[0]
                return None if raw is None else json.loads(raw)

        class BoxType(Datatype):
            name = "box"
            dvid_names = ("jsonbox",)
            def open(self, context):
                return Box(context)
            def describe_key(self, ckey, suffix=""):
                return parse_kv_ckey(ckey)
        '''))
    info = root / "diced_testplugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: diced-testplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nbox = diced_testplugin:BoxType\n"
        "broken = diced_testplugin:DoesNotExist\n")


def test_entry_point_datatype(tmp_path):
    _make_dist(tmp_path)
    code = textwrap.dedent('''
        import json, sys
        import diced
        from diced.datatypes import datatypes, get_datatype
        assert "diced_testplugin" not in sys.modules
        store = diced.Store("memory://entry-point-test")
        repo = store.create_repo("r")
        box = repo.create_instance("b", "jsonbox")   # found through the entry point
        box.put("k", {"x": 1})
        v = repo.commit("c")
        repo.newversion()
        box.put("k", {"x": 2})
        print(json.dumps({
            "types": sorted(datatypes()),
            "type": repo.instances()["b"],
            "old": repo.version(v.uuid)["b"].get("k"),
            "new": box.get("k"),
            "diff": repo.diff(v.uuid)["b"].changed,
            "module": get_datatype("box").__module__,
        }))
        ''')
    proc = _run(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {"types": ["annotation", "array", "box", "keyvalue", "labelgraph", "labels",
                             "labelsz", "neuronjson", "roi"], "type": "box",
                   "old": {"x": 1}, "new": {"x": 2}, "diff": ["k"],
                   "module": "diced_testplugin"}
    assert "broken" in proc.stderr  # the broken entry point is logged, the others work


def test_entry_point_missing_type_message(tmp_path):
    proc = _run(textwrap.dedent('''
        from diced.datatypes import get_datatype
        from diced.errors import UnknownDatatypeError
        try:
            get_datatype("not-installed")
        except UnknownDatatypeError as exc:
            print(exc)
        '''))
    assert proc.returncode == 0, proc.stderr
    assert "diced.datatypes" in proc.stdout and "keyvalue" in proc.stdout


# -- the README example --------------------------------------------------------------------------


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Write your own datatype", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert blocks, "README has no python example in 'Write your own datatype'"
    return blocks[0]


def test_readme_datatype_example():
    proc = _run(_readme_example() + "\nprint('README example ok')\n")
    assert proc.returncode == 0, proc.stderr
    assert "README example ok" in proc.stdout


# -- layering ------------------------------------------------------------------------------------


def test_import_diced_is_light():
    proc = _run(textwrap.dedent('''
        import sys
        import diced
        heavy = [m for m in ("numba", "pyarrow", "starlette", "numpy", "diced.datatypes",
                             "diced.repo") if m in sys.modules]
        print(heavy)
        '''))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_core_imports_no_concrete_datatype():
    proc = _run(textwrap.dedent('''
        import sys
        import diced.store, diced.repo.repo, diced.repo.merge, diced.repo.diff, diced.datatypes
        store = diced.Store("memory://layering")
        repo = store.create_repo("r")
        kv = repo.create_keyvalue("kv")
        kv["a"] = b"1"
        v = repo.commit("c")
        repo.newversion()
        kv["a"] = b"2"
        repo.diff(v.uuid)
        print(sorted(m for m in sys.modules if m.startswith(("diced.datatypes.", "numba",
                                                              "diced.array"))))
        '''))
    assert proc.returncode == 0, proc.stderr
    # only the interface, the registry and the one type used were imported
    assert eval(proc.stdout.strip()) == ["diced.datatypes.base", "diced.datatypes.keyvalue",
                                         "diced.datatypes.keyvalue.keyvalue",
                                         "diced.datatypes.registry"]
    for path in ("repo/repo.py", "repo/merge.py", "repo/diff.py", "store.py"):
        source = (SRC / "diced" / path).read_text()
        assert not re.search(r"^\s*(from|import) diced\.(array|datatypes\.(array|labels|keyvalue))",
                             source, flags=re.MULTILINE), path


def test_builtin_types_have_no_private_repo_access():
    for path in (SRC / "diced" / "datatypes").rglob("*.py"):
        source = path.read_text()
        assert not re.search(r"repo\._|\b_Ref\b|_update_instance|_node\(", source), path


def test_labels_merge_through_the_registry(repo):
    """The label datatype's merge spaces and derived data go through the interface."""
    lab = repo.create_labels("seg", shape=(16, 16, 16), chunks=(8, 8, 8))
    lab[0:8, 0:8, 0:8] = 1
    lab[8:16, 0:8, 0:8] = 2
    base = repo.commit("base")
    repo.branch("a")
    lab.merge(1, [2])
    a = repo.commit("a")
    repo.checkout(base.uuid)
    repo.branch("b")
    lab[0:8, 8:16, 0:8] = 3
    b = repo.commit("b")
    m = repo.merge(a.uuid, b.uuid)
    got = repo.version(m.uuid)["seg"]
    assert got.count(1) == 1024 and got.count(3) == 512
    assert np.array_equal(np.sort(got.supervoxels(1)), [1, 2])
    d = repo.diff(base.uuid, m.uuid)["seg"]
    assert d.remapped == [2] and d.added == [(0, 1, 0)]
