"""``diced delete-version``, ``delete-branch``, ``squash`` and ``gc``."""

from __future__ import annotations

import numpy as np
import pytest

import diced
from diced.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def store_path(tmp_path):
    path = str(tmp_path / "fly.diced")
    with diced.Store(path) as store:
        repo = store.create_repo("fly")
        img = repo.create_array("img", "uint16", (64, 64), chunks=(32, 32))
        img[:] = 3
        repo.commit("v0")
        repo.newversion()
        img[:32] = 4
        repo.commit("v1")
        repo.newversion()
        img[:, :32] = 5
        repo.commit("v2")
        repo.branch("exp")
        img[...] = 7
        repo.commit("e1")
    return path


def test_delete_branch_then_gc(store_path, capsys):
    code, out, _ = run(capsys, "delete-branch", store_path, "fly", "exp")
    assert code == 0 and "deleted 1 version(s) of branch 'exp'" in out and "diced gc" in out
    code, out, _ = run(capsys, "gc", store_path)
    assert code == 0 and "collected 1 removed version(s)" in out
    code, out, _ = run(capsys, "gc", store_path, "--repo", "fly")
    assert code == 0 and "collected 0 removed version(s)" in out


def test_squash_and_delete_version_with_gc(store_path, capsys):
    with diced.Store(store_path) as s:
        want = s.open_repo("fly").version("master").array("img")[...]
    code, out, _ = run(capsys, "squash", store_path, "fly", "master~1", "master", "--gc")
    assert code == 0 and "squashed 2 version(s)" in out and "collected 1" in out
    with diced.Store(store_path) as s:
        r = s.open_repo("fly")
        assert len(r.versions()) == 3
        assert np.array_equal(r.version("master").array("img")[...], want)
    code, out, _ = run(capsys, "delete-version", store_path, "fly", "exp", "--gc")
    assert code == 0 and "deleted version" in out


def test_refusals_are_one_line_errors(store_path, capsys):
    code, _, err = run(capsys, "delete-version", store_path, "fly", "master~1")
    assert code != 0 and "children" in err
    code, _, err = run(capsys, "delete-branch", store_path, "fly", "master")
    assert code != 0 and "master" in err
    code, _, err = run(capsys, "squash", store_path, "fly", "exp", "master")
    assert code != 0 and "single parents" in err
