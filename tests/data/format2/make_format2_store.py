"""Make a tiny format-2 store (repo metadata format 1: one JSON repo document) with diced at
commit d6c459d, before repo metadata was split into per-record keys."""
import sys

import numpy as np

import diced

path = sys.argv[1]
store = diced.Store(path)
repo = store.create_repo("fly", description="format-2 fixture")
gray = repo.create_array("gray", dtype="uint8", shape=(40, 70, 70), chunks=(32, 32, 32))
gray[...] = (np.arange(40 * 70 * 70) % 251).astype(np.uint8).reshape(40, 70, 70)
seg = repo.create_labels("seg", shape=(64, 64, 64), chunks=(32, 32, 32))
lab = np.zeros((64, 64, 64), np.uint64)
lab[:20] = 7
lab[20:, :30] = 9
lab[40:, 40:, 40:] = 11
seg[...] = lab
kv = repo.create_keyvalue("files")
kv["a/b.json"] = b'{"x": 1}'
repo.commit("first", log=["made by make_format2_store.py"])
repo.tag("v1")
repo.newversion("second")
gray[0, 0, 0:5] = 200
repo.commit("second")
repo.branch("edit", note="an edit")
seg.merge(7, [9])
kv["c"] = b"see"
repo.commit("edit done")
repo.checkout(branch="master")
repo.newversion("third")
kv["d"] = b"dee"
repo.commit("third")
m = repo.merge("master", "edit", note="merged")
repo.create_keyvalue("late")
repo["late"]["k"] = b"v"
other = store.create_repo("other", description="a second repo")
print(repo.head.uuid, m.uuid)
