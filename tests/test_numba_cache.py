"""numba's kernel cache goes to a user cache directory, not into the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import diced

SRC = Path(diced.__file__).resolve().parent

RUN_KERNEL = """
import os, sys
{before}
import numpy as np
import diced
from diced.array.codecs.labelblock import decode_block, encode_block
block = np.arange(64 ** 3, dtype=np.uint64).reshape(64, 64, 64) % 7
assert (decode_block(encode_block(block)) == block).all()
import numba.core.config
print(os.environ["NUMBA_CACHE_DIR"], numba.core.config.CACHE_DIR, sep="\\n")
"""


def _run(tmp_path: Path, env_extra: dict[str, str], before: str = "") -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(PYTHONPATH=str(SRC.parent), XDG_CACHE_HOME=str(tmp_path / "xdg"),
               HOME=str(tmp_path / "home"), **env_extra)
    proc = subprocess.run([sys.executable, "-c", RUN_KERNEL.format(before=before)], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()


def _new_cache_files_in_source(since: float) -> list[Path]:
    return [p for p in SRC.rglob("__pycache__/*.nb[ic]") if p.stat().st_mtime >= since]


def test_kernels_cache_in_the_user_cache_dir(tmp_path):
    start = time.time() - 1
    env_dir, config_dir = _run(tmp_path, {})
    assert env_dir == config_dir
    assert Path(env_dir).is_relative_to(tmp_path)  # XDG_CACHE_HOME (or HOME) based
    assert env_dir.endswith(os.path.join("diced", "numba"))
    assert list(Path(env_dir).rglob("*.nbi"))
    assert _new_cache_files_in_source(start) == []


def test_user_choice_is_kept(tmp_path):
    chosen = tmp_path / "mine"
    env_dir, config_dir = _run(tmp_path, {"NUMBA_CACHE_DIR": str(chosen)})
    assert env_dir == config_dir == str(chosen) and list(chosen.rglob("*.nbi"))


def test_numba_imported_before_diced(tmp_path):
    start = time.time() - 1
    env_dir, config_dir = _run(tmp_path, {}, before="import numba")
    assert config_dir == env_dir and Path(config_dir).is_relative_to(tmp_path)
    assert list(Path(config_dir).rglob("*.nbi"))
    assert _new_cache_files_in_source(start) == []
