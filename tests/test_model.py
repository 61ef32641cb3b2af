"""A hypothesis state machine drives random version-DAG and data operations against a
plain-Python model: every version's full contents (arrays as numpy arrays, keyvalues as
dicts), children copying their parents, merges applying the three-way rule per chunk and
per key with "first parent wins" for conflicts. Reading any version must equal the model."""

from __future__ import annotations

import itertools
import os
import shutil
import uuid
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import diced
from diced.errors import (
    DuplicateNameError,
    LockedNodeError,
    UnlockedNodeError,
)
from diced.testing.memory import forget_memory

SHAPE = (6, 7)
CHUNKS = (3, 4)
DTYPE = np.dtype("int16")
ARRAY_NAMES = ["img", "seg", "aux"]
KV_NAMES = ["kv", "notes"]
BRANCH_NAMES = ["b1", "b2", "b3", "b4"]
KV_KEYS = ["a", "b", "c", "d/e"]
KV_VALUES = [b"", b"1", b"2", b"xyz"]


# -- the model --------------------------------------------------------------------------------


@dataclass
class MVersion:
    uuid: str
    parents: list[str]
    branch: str
    locked: bool = False
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    kvs: dict[str, dict[str, bytes]] = field(default_factory=dict)


class Model:
    def __init__(self, root: str) -> None:
        self.versions: dict[str, MVersion] = {root: MVersion(root, [], "")}
        self.order = [root]  # creation order
        self.kinds: dict[str, str] = {}  # instance name -> "array" | "keyvalue"

    def ancestors(self, u: str) -> set[str]:
        out, todo = set(), [u]
        while todo:
            v = todo.pop()
            if v not in out:
                out.add(v)
                todo.extend(self.versions[v].parents)
        return out

    def branch_chain(self, branch: str) -> list[str]:
        """``branch~0``, ``branch~1``, ...: from the branch's newest leaf (a node without a
        child on the same branch) through first parents."""
        on = [u for u in self.order if self.versions[u].branch == branch]
        leaves = [u for u in on if not any(u in self.versions[c].parents
                                           and self.versions[c].branch == branch
                                           for c in self.order)]
        out = [leaves[-1]]
        while self.versions[out[-1]].parents:
            out.append(self.versions[out[-1]].parents[0])
        return out

    def branch_chain_of(self, u: str) -> list[str]:
        """First-parent history of ``u``, oldest first (``repo.log``)."""
        out = [u]
        while self.versions[out[-1]].parents:
            out.append(self.versions[out[-1]].parents[0])
        return out[::-1]

    def merge_bases(self, us: list[str]) -> list[str]:
        common = set.intersection(*(self.ancestors(u) for u in us))
        return [c for c in common if not any(c != d and c in self.ancestors(d) for d in common)]

    def add_child(self, new: str, parents: list[str], branch: str) -> MVersion:
        first = self.versions[parents[0]]
        v = MVersion(new, list(parents), branch,
                     arrays={k: a.copy() for k, a in first.arrays.items()},
                     kvs={k: dict(d) for k, d in first.kvs.items()})
        self.versions[new] = v
        self.order.append(new)
        return v

    # values of one key ("chunk" of an array or key of a keyvalue) at a version; None = absent
    def value(self, u: str, inst: str, key) -> bytes | None:
        v = self.versions[u]
        if self.kinds[inst] == "keyvalue":
            return v.kvs.get(inst, {}).get(key)
        arr = v.arrays.get(inst)
        if arr is None:
            return None
        box = arr[_chunk_box(key)]
        return None if not box.any() else box.tobytes()

    def base_value(self, bases: list[str], inst: str, key) -> tuple[bool, bytes | None]:
        vals = [self.value(b, inst, key) for b in bases]
        if len(set(vals)) == 1:
            return True, vals[0]
        known, base = self.base_value(self.merge_bases(bases), inst, key)
        changed = {v for v in vals if v != base}
        return (True, changed.pop()) if known and len(changed) == 1 else (False, None)

    def merge(self, new: str, parents: list[str]) -> MVersion:
        # a merge node continues its first parent's branch (git's rule)
        m = self.add_child(new, parents, self.versions[parents[0]].branch)
        bases = self.merge_bases(parents)
        visible = set().union(*(set(self.versions[p].arrays) | set(self.versions[p].kvs)
                                for p in parents))
        for inst in sorted(visible):
            if self.kinds[inst] == "keyvalue":
                keys = set().union(*(self.versions[p].kvs.get(inst, {}) for p in parents))
            else:
                keys = set(_all_chunks())
            merged_kv: dict[str, bytes] = {}
            merged_arr = np.zeros(SHAPE, DTYPE)
            for key in sorted(keys):
                vals = [self.value(p, inst, key) for p in parents]
                if len(set(vals)) == 1:
                    out = vals[0]
                else:
                    known, base = self.base_value(bases, inst, key)
                    changed = {v for v in vals if v != base}
                    # a clean three-way result, else the first parent wins the conflict
                    out = changed.pop() if known and len(changed) == 1 else vals[0]
                if self.kinds[inst] == "keyvalue":
                    if out is not None:
                        merged_kv[key] = out
                elif out is not None:
                    sl = _chunk_box(key)
                    merged_arr[sl] = np.frombuffer(out, DTYPE).reshape(merged_arr[sl].shape)
            if self.kinds[inst] == "keyvalue":
                m.kvs[inst] = merged_kv
            else:
                m.arrays[inst] = merged_arr
        return m


def _chunk_box(coords) -> tuple[slice, ...]:
    return tuple(slice(c * k, min((c + 1) * k, n)) for c, k, n in zip(coords, CHUNKS, SHAPE))


def _all_chunks():
    return itertools.product(*(range(-(-n // k)) for n, k in zip(SHAPE, CHUNKS)))


# -- the machine -------------------------------------------------------------------------------

boxes = st.tuples(*(st.tuples(st.integers(0, n - 1), st.integers(1, n)) for n in SHAPE)).map(
    lambda pairs: tuple(slice(min(a, b - 1), max(a + 1, b)) for a, b in pairs))


class RepoMachine(RuleBasedStateMachine):
    """Subclasses set ``location()`` to the store location of one example."""

    location = staticmethod(lambda: "")
    options: ClassVar[dict] = {}

    @initialize()
    def setup(self):
        self.loc = self.location()
        self.store = diced.Store(self.loc, **self.options)
        self.repo = self.store.create_repo("model")
        self.model = Model(self.repo.uuid)
        self.head = self.repo.uuid

    def teardown(self):
        if hasattr(self, "store"):
            try:
                for u in self.model.order:
                    self.check_version(u)
            finally:
                self.store.close()
                if "://" not in self.loc:
                    shutil.rmtree(os.path.dirname(self.loc), ignore_errors=True)
                elif self.loc.startswith("memory://"):
                    _forget_memory(self.loc)

    # -- helpers ---------------------------------------------------------------------------

    @property
    def mhead(self) -> MVersion:
        return self.model.versions[self.head]

    def check_version(self, u: str) -> None:
        v = self.repo.version(u)
        mv = self.model.versions[u]
        assert v.locked == mv.locked
        assert v.parents == mv.parents
        want = {**{n: "array" for n in mv.arrays}, **{n: "keyvalue" for n in mv.kvs}}
        assert v.instances() == dict(sorted(want.items()))
        for name, ref in mv.arrays.items():
            got = v.array(name)[...]
            assert np.array_equal(got, ref), (u, name, got, ref)
            stored = set(v.array(name).stored_chunks())
            assert stored == {c for c in _all_chunks() if ref[_chunk_box(c)].any()}
        for name, ref in mv.kvs.items():
            assert dict(v.keyvalue(name).items()) == ref, (u, name)

    # -- instances ------------------------------------------------------------------------

    @rule(name=st.sampled_from(ARRAY_NAMES + KV_NAMES))
    def create_instance(self, name):
        kind = "keyvalue" if name in KV_NAMES else "array"
        make = ((lambda: self.repo.create_keyvalue(name)) if kind == "keyvalue" else
                (lambda: self.repo.create_array(name, DTYPE, SHAPE, chunks=CHUNKS)))
        if self.mhead.locked:
            with pytest.raises(LockedNodeError):
                make()
        elif name in self.model.kinds:
            with pytest.raises(DuplicateNameError):
                make()
        else:
            make()
            self.model.kinds[name] = kind
            if kind == "keyvalue":
                self.mhead.kvs[name] = {}
            else:
                self.mhead.arrays[name] = np.zeros(SHAPE, DTYPE)

    # -- data ------------------------------------------------------------------------------

    def _array_names(self):
        return sorted(self.mhead.arrays)

    def _kv_names(self):
        return sorted(self.mhead.kvs)

    @precondition(lambda self: self._array_names())
    @rule(data=st.data(), box=boxes, seed=st.integers(0, 2**16), scalar=st.booleans())
    def write_box(self, data, box, seed, scalar):
        name = data.draw(st.sampled_from(self._array_names()))
        shape = tuple(s.stop - s.start for s in box)
        rng = np.random.default_rng(seed)
        value = (DTYPE.type(rng.integers(0, 4)) if scalar
                 else rng.integers(0, 4, size=shape).astype(DTYPE))
        arr = self.repo.array(name)
        if self.mhead.locked:
            with pytest.raises(LockedNodeError):
                arr[box] = value
            return
        arr[box] = value
        self.mhead.arrays[name][box] = value

    @precondition(lambda self: self._array_names())
    @rule(data=st.data(), box=boxes)
    def delete_box(self, data, box):
        name = data.draw(st.sampled_from(self._array_names()))
        arr = self.repo.array(name)
        if self.mhead.locked:
            with pytest.raises(LockedNodeError):
                arr[box] = 0
            return
        arr[box] = 0  # back to the fill value
        self.mhead.arrays[name][box] = 0

    @precondition(lambda self: self._kv_names())
    @rule(data=st.data(), key=st.sampled_from(KV_KEYS), value=st.sampled_from(KV_VALUES))
    def kv_set(self, data, key, value):
        name = data.draw(st.sampled_from(self._kv_names()))
        kv = self.repo.keyvalue(name)
        if self.mhead.locked:
            with pytest.raises(LockedNodeError):
                kv[key] = value
            return
        kv[key] = value
        self.mhead.kvs[name][key] = value

    @precondition(lambda self: self._kv_names())
    @rule(data=st.data(), key=st.sampled_from(KV_KEYS))
    def kv_delete(self, data, key):
        name = data.draw(st.sampled_from(self._kv_names()))
        kv = self.repo.keyvalue(name)
        if self.mhead.locked:
            with pytest.raises(LockedNodeError):
                kv.delete(key)
            return
        kv.delete(key)
        self.mhead.kvs[name].pop(key, None)

    # -- the DAG ---------------------------------------------------------------------------

    @rule()
    def lock(self):
        if self.mhead.locked:
            with pytest.raises(LockedNodeError):
                self.repo.commit("again")
            return
        v = self.repo.commit(f"lock {len(self.model.order)}")
        assert v.uuid == self.head and v.locked
        self.mhead.locked = True

    @rule()
    def newversion(self):
        if not self.mhead.locked:
            with pytest.raises(UnlockedNodeError):
                self.repo.newversion()
            return
        taken = any(self.head in v.parents and v.branch == self.mhead.branch
                    for v in self.model.versions.values())
        if taken:
            with pytest.raises(DuplicateNameError):
                self.repo.newversion()
            return
        v = self.repo.newversion()
        self.model.add_child(v.uuid, [self.head], self.mhead.branch)
        self.head = v.uuid

    @rule(name=st.sampled_from(BRANCH_NAMES))
    def branch(self, name):
        if not self.mhead.locked:
            with pytest.raises(UnlockedNodeError):
                self.repo.branch(name)
            return
        if any(v.branch == name for v in self.model.versions.values()):
            with pytest.raises(DuplicateNameError):
                self.repo.branch(name)
            return
        v = self.repo.branch(name)
        assert v.branch == name
        self.model.add_child(v.uuid, [self.head], name)
        self.head = v.uuid

    @rule(data=st.data())
    def checkout(self, data):
        u = data.draw(st.sampled_from(self.model.order))
        self.repo.checkout(u[:12])
        self.head = u

    def _lock(self, u: str) -> None:
        if not self.model.versions[u].locked:
            self.repo.commit(f"lock {u[:6]}", uuid=u)
            self.model.versions[u].locked = True

    @rule(name=st.sampled_from(BRANCH_NAMES))
    def lock_and_fork(self, name):
        """Lock the head and continue from it: on a new branch when the name is free,
        else with a new version when the branch has none yet."""
        self._lock(self.head)
        if not any(v.branch == name for v in self.model.versions.values()):
            v = self.repo.branch(name)
            self.model.add_child(v.uuid, [self.head], name)
        elif not any(self.head in v.parents and v.branch == self.mhead.branch
                     for v in self.model.versions.values()):
            v = self.repo.newversion()
            self.model.add_child(v.uuid, [self.head], self.mhead.branch)
        else:
            return
        self.head = v.uuid

    def _continued(self, u: str) -> bool:
        """Whether ``u`` has a child on its own branch (no merge may continue it then)."""
        b = self.model.versions[u].branch
        return any(u in v.parents and v.branch == b for v in self.model.versions.values())

    @precondition(lambda self: len(self.model.order) >= 2)
    @rule(data=st.data())
    def merge(self, data):
        pair = data.draw(st.lists(st.sampled_from(self.model.order), min_size=2, max_size=2,
                                  unique=True))
        for u in pair:
            self._lock(u)
        if self._continued(pair[0]):
            with pytest.raises(DuplicateNameError, match="already has a child"):
                self.repo.merge(*pair, note="merge", strategy=pair[0])
            event("merge onto a version with a child on its branch: refused")
            return
        m = self.repo.merge(*pair, note="merge", strategy=pair[0])
        assert m.parents == pair and not m.locked
        self.model.merge(m.uuid, pair)
        self.head = m.uuid
        event(f"merge with {len(self.model.merge_bases(pair))} merge base(s)")

    @precondition(lambda self: len(self.model.order) >= 2)
    @rule(data=st.data())
    def criss_cross(self, data):
        """Merge two versions both ways, then the two merges (several merge bases)."""
        a, b = data.draw(st.lists(st.sampled_from(self.model.order), min_size=2, max_size=2,
                                  unique=True))
        for u in (a, b):
            self._lock(u)
        ms = []
        for pair in ([a, b], [b, a]):
            if self._continued(pair[0]):
                with pytest.raises(DuplicateNameError, match="already has a child"):
                    self.repo.merge(*pair, strategy=pair[0])
                return
            m = self.repo.merge(*pair, strategy=pair[0])
            self.model.merge(m.uuid, pair)
            self.head = m.uuid
            if self._array_names() and data.draw(st.booleans()):  # change something on top
                self.write_box(data, data.draw(boxes), data.draw(st.integers(0, 99)), True)
            self._lock(m.uuid)
            ms.append(m.uuid)
        m = self.repo.merge(*ms, strategy=ms[0])
        self.model.merge(m.uuid, ms)
        self.head = m.uuid
        event(f"criss-cross merge with {len(self.model.merge_bases(ms))} merge base(s)")

    @rule(data=st.data())
    def read_any_version(self, data):
        self.check_version(data.draw(st.sampled_from(self.model.order)))

    @invariant()
    def branches_follow_first_parents(self):
        if not hasattr(self, "repo"):
            return
        names = {v.branch for v in self.model.versions.values()}
        assert set(self.repo.branches()) == {b or "master" for b in names}
        for b in names:
            chain = self.model.branch_chain(b)
            name = b or "master"
            assert self.repo.branches()[name].uuid == chain[0]
            for n in {0, len(chain) // 2, len(chain) - 1}:
                assert self.repo.version(f"{name}~{n}").uuid == chain[n]
        assert [v.uuid for v in self.repo.log()] == self.model.branch_chain_of(self.head)

    @invariant()
    def head_matches(self):
        if hasattr(self, "repo"):
            assert self.repo.current_uuid == self.head
            self.check_version(self.head)


def _forget_memory(url: str) -> None:
    forget_memory(url)


class MemoryMachine(RepoMachine):
    location = staticmethod(lambda: f"memory://model-{uuid.uuid4().hex}")


class LMDBMachine(RepoMachine):
    options: ClassVar[dict] = {"durable": False}  # no fsync per transaction: the semantics are the same
    @staticmethod
    def location():
        import tempfile

        return tempfile.mkdtemp(prefix="diced-model-") + "/s.diced"


MACHINE = settings(max_examples=40, stateful_step_count=40, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

TestMemoryModel = MemoryMachine.TestCase
TestMemoryModel.settings = MACHINE

TestLMDBModel = LMDBMachine.TestCase
TestLMDBModel.settings = settings(MACHINE, max_examples=12)
