"""The ``diced`` command line: versioning commands, ``info``, ``--version``, errors, Ctrl-C.

Commands run through ``diced.cli.main([...])`` (the entry point the console script calls);
one test runs the real executable in a subprocess.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import diced
from diced.cli import build_parser, cli_message, main

SRC = str(Path(diced.__file__).resolve().parents[1])


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def store_path(tmp_path):
    """An LMDB store with repo 'fly': image 'img', labels 'seg', hidden '.files', two
    versions on master (the first locked) and a branch 'feature' from the first."""
    path = str(tmp_path / "fly.diced")
    with diced.Store(path) as store:
        repo = store.create_repo("fly")
        img = repo.create_array("img", "uint16", (64, 64), chunks=(32, 32))
        seg = repo.create_labels("seg", (16, 16, 16), chunks=(8, 8, 8))
        repo.create_keyvalue(".files")
        img[:] = 3
        seg[:8] = 1
        repo.commit("first", ["imported"])
        repo.newversion("second")
        img[0, 0] = 9
        repo.checkout("master~1")
    return path


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"diced {diced.__version__}"


def test_every_subcommand_help_has_examples(capsys):
    parser = build_parser()
    commands = list(parser._subparsers._group_actions[0].choices)
    assert {"info", "log", "branch", "commit", "tag", "diff", "merge", "checkout"} <= set(commands)
    for argv in [[c] for c in commands] + [["export", "precomputed"], ["export", "zarr"]]:
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        assert "example" in capsys.readouterr().out, argv


def test_no_command_prints_help(capsys):
    code, out, _ = run(capsys)
    assert code == 1 and "COMMAND" in out


def test_info(store_path, capsys):
    code, out, err = run(capsys, "info", store_path)
    assert code == 0, err
    assert "repo 'fly'" in out and "versions=2" in out
    assert "head " in out and "'master' (locked)" in out
    img_line = next(line for line in out.splitlines() if " img " in line)
    assert "uint16" in img_line and "shape=(64, 64)" in img_line and "chunks=(32, 32)" in img_line
    assert "stored: 5 values" in img_line  # 4 chunks at v1, 1 rewritten at v2
    assert "labels" in out and "uint64" in out
    assert ".files" not in out and "1 internal instance hidden" in out
    code, out, _ = run(capsys, "info", store_path, "fly", "--all", "--no-sizes")
    assert code == 0 and ".files" in out and "stored:" not in out
    code, _, err = run(capsys, "info", store_path, "nope")
    assert code == 2 and "no repo named 'nope'" in err


def test_read_only_commands_never_create_a_store(tmp_path, capsys):
    missing = tmp_path / "nonexist.diced"
    npy = tmp_path / "file.npy"
    np.save(npy, np.zeros(3))
    plain = tmp_path / "plain"
    plain.mkdir()
    for argv in (["info", missing], ["log", missing, "fly"], ["diff", missing, "fly", "a"],
                 ["branch", missing, "fly"], ["info", f"file://{missing}"],
                 ["export", "zarr", missing, "fly", "img", tmp_path / "out.zarr"],
                 ["ingest", missing, "fly", "img", npy]):
        code, _out, err = run(capsys, *argv)
        assert code == 2 and "no diced store" in err and len(err.strip().splitlines()) == 1, argv
    assert not missing.exists() and not (tmp_path / "out.zarr").exists()
    code, _, err = run(capsys, "info", npy)
    assert code == 2 and err.strip() == f"diced info: error: {npy} is a file, not a diced store " \
                                         "(a store is a directory)"
    code, _, err = run(capsys, "info", plain)
    assert code == 2 and "not a diced store" in err and os.listdir(plain) == []


def test_log(store_path, capsys):
    code, out, _ = run(capsys, "log", store_path, "fly")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].startswith("* ") and "first" in lines[0] and "locked" in lines[0]
    assert "second" in lines[1] and "open" in lines[1]
    code, out, _ = run(capsys, "log", store_path, "fly", "master", "--notes")
    assert code == 0 and "imported" in out and out.count("branch=master") == 2
    code, _, err = run(capsys, "log", store_path, "fly", "zzz")
    assert code == 2 and "no version matches 'zzz'" in err


def test_branch_checkout_commit_newversion(store_path, capsys):
    code, out, _ = run(capsys, "branch", store_path, "fly")
    assert code == 0 and out.splitlines()[0].startswith("* master")
    code, out, _ = run(capsys, "branch", store_path, "fly", "feature", "-m", "try")
    assert code == 0 and "started branch 'feature'" in out
    repo = diced.Store(store_path).open_repo("fly")
    assert repo.head.branch == "feature" and not repo.head.locked  # the head moved, stored
    code, _, err = run(capsys, "branch", store_path, "fly", "feature", "--from", "master~1")
    assert code == 2 and "already exists" in err
    code, out, _ = run(capsys, "commit", store_path, "fly", "-m", "tried", "--log", "a line")
    assert code == 0 and "locked" in out
    repo = diced.Store(store_path).open_repo("fly")
    assert repo.head.locked and repo.head.note == "tried" and repo.head.log[0].endswith("a line")
    code, _, err = run(capsys, "commit", store_path, "fly", "-m", "again")
    assert code == 2 and "already locked" in err
    code, out, _ = run(capsys, "newversion", store_path, "fly", "-m", "more")
    assert code == 0 and diced.Store(store_path).open_repo("fly").head.note == "more"
    code, out, _ = run(capsys, "checkout", store_path, "fly", "master")
    assert code == 0 and "head is now" in out
    assert diced.Store(store_path).open_repo("fly").head.note == "second"
    code, _, err = run(capsys, "checkout", store_path, "fly", "nowhere")
    assert code == 2 and "no version matches" in err


def test_wrong_arguments_exit_2(store_path, capsys):
    for argv in (["commit", store_path, "fly"], ["checkout", store_path], ["merge"],
                 ["info"], ["log", store_path], ["nosuchcommand"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2, argv
        assert "usage:" in capsys.readouterr().err


def test_tag(store_path, capsys):
    code, out, _ = run(capsys, "tag", store_path, "fly", "v1", "-m", "release")
    assert code == 0 and "as 'v1'" in out
    code, out, _ = run(capsys, "tag", store_path, "fly")
    assert out.startswith("v1") and "release" in out
    repo = diced.Store(store_path).open_repo("fly")
    assert repo.version("v1").array("img")[0, 0] == 3
    code, _, err = run(capsys, "tag", store_path, "fly", "v2", "--version", "master")
    assert code == 2 and "open" in err  # the master leaf is open: tags name locked versions


def test_diff_and_merge(store_path, capsys):
    code, out, _ = run(capsys, "diff", store_path, "fly", "master~1", "master", "--keys")
    assert code == 0 and "img: 0 added, 1 changed, 0 removed" in out
    assert "img changed (0, 0)" in out
    code, out, _ = run(capsys, "diff", store_path, "fly", "master~1", "master~1")
    assert code == 0 and "no changes" in out
    # two branches from the first version, then merge them
    # (branch names that are not hex: "a" could also be the prefix of a version UUID)
    assert run(capsys, "branch", store_path, "fly", "left", "--from", "master~1")[0] == 0
    repo = diced.Store(store_path).open_repo("fly")
    repo.array("img")[40, 40] = 5
    repo.labels("seg")[15, 15, 15] = 7
    repo.commit("a")
    repo.branch("right", parent="master~1")
    repo.array("img")[40, 41] = 6
    repo.commit("b")
    code, out, _ = run(capsys, "diff", store_path, "fly", "left~1", "left", "--labels")
    assert code == 0 and "seg label 7: +1 voxels" in out
    code, out, err = run(capsys, "merge", store_path, "fly", "left", "right")
    assert code == 2 and "conflict: img (1, 1)" in out and "--strategy" in err
    assert "strategy=" not in err
    assert len(diced.Store(store_path).open_repo("fly").versions()) == 4  # nothing stored
    code, out, err = run(capsys, "merge", store_path, "fly", "left", "right", "--strategy", "1", "-m", "j")
    assert code == 0, err
    merged = diced.Store(store_path).open_repo("fly")
    assert merged.head.note == "j" and list(merged.array("img")[40, 40:42]) == [3, 6]
    code, _, err = run(capsys, "merge", store_path, "fly", "left")
    assert code == 2 and "two or more" in err


def test_ingest_into_a_missing_repo_names_the_flag(store_path, tmp_path, capsys):
    np.save(tmp_path / "v.npy", np.zeros((4, 4, 4), np.uint8))
    code, _, err = run(capsys, "ingest", store_path, "nope", "img", tmp_path / "v.npy", "--quiet")
    assert code == 2 and "--create-repo" in err


def test_error_hints_name_flags():
    assert cli_message("pass overwrite=True to replace") == "pass --overwrite to replace"
    assert cli_message("rerun with slab=64 or resume=False") == "rerun with --slab 64 or --no-resume"
    assert "--into-existing" in cli_message("exists; pass create=False to fill it")
    assert cli_message("holds 2 datasets (/a, /b); choose one with dataset=") == \
        "holds 2 datasets (/a, /b); choose one with --dataset"
    assert cli_message("pass axes= (diced ingest --axes)").startswith("pass --axes (")
    assert cli_message("axes='zy' must name").startswith("--axes 'zy' must")


def test_export_hint_names_the_flag(store_path, tmp_path, capsys):
    dest = tmp_path / "out.zarr"
    assert run(capsys, "export", "zarr", store_path, "fly", "img", dest, "--quiet")[0] == 0
    code, _, err = run(capsys, "export", "zarr", store_path, "fly", "img", dest, "--quiet")
    assert code == 2 and "--overwrite" in err and "overwrite=True" not in err


def test_ctrl_c_exits_130_with_one_line(store_path, capsys, monkeypatch):
    from diced.cli import inspect as inspect_cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(inspect_cli, "run_info", interrupted)
    code, _out, err = run(capsys, "info", store_path)
    assert code == 130 and err == "diced info: interrupted\n"


def test_console_entry_point_subprocess(store_path, tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run([sys.executable, "-m", "diced", "info", str(tmp_path / "file.npy")],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run([sys.executable, "-m", "diced", "log", store_path, "fly"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0 and "first" in proc.stdout


def test_tour(tmp_path, capsys):
    store = tmp_path / "tour.diced"
    code, out, err = run(capsys, "tour", "--store", store, "--size", "128")
    assert code == 0, err
    assert "merged both branches" in out and "done" in out and store.exists()
    assert f"diced serve {store}" in out and "http://127.0.0.1:8000/" in out  # the next step
    merged = re.search(r"merged body (\d+) into (\d+)", out)
    assert merged, out
    with diced.Store(str(store)) as st:
        repo = st.open_repo("tour")
        seg = repo.labels("segmentation")
        assert seg.shape == (128, 128, 128) and seg.origin == (1000, 2000, 3000)
        first = repo.version(repo.versions()[0].uuid).labels("segmentation")
        assert not repo.versions()[0].parents
        cells = np.unique(first[:])
        assert 0 not in cells and len(cells) >= 50  # a realistic segmentation, no background
        b, a = int(merged[1]), int(merged[2])
        assert first.body(b) == b and seg.body(b) == a  # merged on the branch, kept by the merge
        # the grayscale shows the cells: dark membranes between them
        root = repo.versions()[0].uuid
        gray = repo.version(root).array("grayscale")[1000:1128, 2000:2128, 3000:3128]
        edge = np.diff(first[:].astype(np.int64), axis=2) != 0
        assert gray[:, :, 1:][edge].mean() < gray[:, :, 1:][~edge].mean() - 40
    code, out, _ = run(capsys, "log", store, "tour")
    assert code == 0 and out.count("\n") == 4  # root, two branches, the merge
    code, _, err = run(capsys, "tour", "--size", "64")
    assert code == 2 and "--size must be at least 128" in err


def test_info_on_a_file_url_store(tmp_path, capsys):
    with diced.Store(f"file://{tmp_path}/fs") as store:
        store.create_repo("r").create_keyvalue("kv")["k"] = b"v"
    code, out, err = run(capsys, "info", f"file://{tmp_path}/fs")
    assert code == 0, err
    assert "keyvalue  kv" in out and "1 keys" in out


def test_commit_pack_and_pack(tmp_path, capsys):
    url = f"file://{tmp_path}/fs"
    with diced.Store(url) as store:
        a = store.create_repo("r").create_array("a", "uint8", (64, 64, 64), chunks=(32, 32, 32))
        a[...] = 5
    code, _, err = run(capsys, "pack", url, "r")
    assert code == 2 and "is open" in err and "'diced commit --pack'" in err
    code, out, err = run(capsys, "commit", url, "r", "-m", "one", "--pack")
    assert code == 0 and "(packed)" in out, err
    packs = [p for p in Path(tmp_path, "fs").rglob("*") if p.is_file() and "/p/" in str(p)]
    assert packs
    code, out, _ = run(capsys, "pack", url, "r")
    assert code == 0 and "packed" in out and "1 key space" in out
    code, out, _ = run(capsys, "info", url, "r")
    assert code == 0 and "chunk packs: 1 objects" in out
    code, _, err = run(capsys, "pack", url, "r", "--version", "nosuch")
    assert code == 2 and "no version matches 'nosuch'" in err


def test_pack_on_lmdb_says_there_is_nothing_to_do(store_path, capsys):
    code, out, err = run(capsys, "pack", store_path, "fly", "--version", "master~1")
    assert code == 0 and "nothing to pack" in out, err
    run(capsys, "checkout", store_path, "fly", "master")
    code, out, err = run(capsys, "commit", store_path, "fly", "-m", "two", "--pack")
    assert code == 0 and "nothing to do on this store" in out and "(packed)" not in out, err
