"""The conda recipe and the licence: what a packager needs is there and agrees with pyproject."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = (ROOT / "conda-recipe" / "meta.yaml").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _about(field: str) -> str:
    about = RECIPE.split("\nabout:", 1)[1]
    m = re.search(rf"^\s+{field}:\s*(.+)$", about, re.MULTILINE)
    assert m, f"about.{field} missing from the conda recipe"
    return m.group(1).strip()


def test_recipe_builds_without_isolation():
    script = re.search(r"^\s+script:\s*(.+)$", RECIPE, re.MULTILINE).group(1)
    assert "pip install ." in script and "--no-build-isolation" in script and "--no-deps" in script
    # without isolation the host env must hold the build backend pyproject asks for
    backend = next(r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools"))
    assert f"setuptools {backend.removeprefix('setuptools')}" in RECIPE


def test_recipe_names_home_and_licence_file():
    assert _about("home") == '{{ project["urls"]["Homepage"] }}'
    assert PYPROJECT["project"]["urls"]["Homepage"].startswith("https://")
    assert _about("license") == '{{ project["license"] }}'
    license_file = _about("license_file")
    assert (ROOT / license_file).is_file()


def test_licence_is_the_bsd_3_clause_pyproject_declares():
    assert PYPROJECT["project"]["license"] == "BSD-3-Clause"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License")
    assert "Neither the name of the copyright holder" in text
