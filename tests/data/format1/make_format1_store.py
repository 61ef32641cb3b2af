"""Make a tiny format-1 store with diced at commit b261217 (before checksums)."""
import sys

import numpy as np

import diced

path = sys.argv[1]
store = diced.Store(path)
repo = store.create_repo("fly", description="format-1 fixture")
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
kv["empty"] = b""
repo.commit("first")
repo.branch("edit")
gray[0, 0, 0:5] = 200
seg.merge(7, [9])
del kv["empty"]
kv["c"] = b"see"
print(repo.head.uuid)
