"""The tour notebook runs from top to bottom."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "tour.ipynb"


def test_tour_notebook_executes(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "grayscale" in text and "merge" in text
    # the notebook removes the temporary directory it made
    where = next(line.split("store in ", 1)[1] for line in text.splitlines()
                 if line.startswith("store in "))
    assert "removed " + where in text and not Path(where).exists()


def test_readme_links_the_notebook():
    readme = (NOTEBOOK.parents[1] / "README.md").read_text()
    assert "(notebooks/tour.ipynb)" in readme
