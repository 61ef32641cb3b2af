"""The numpy layer under the array-like datatypes: what needs no repo and does no I/O.

* :mod:`~diced.array.grid` (dtype, shape and chunk checks; the one casting rule) and
  :mod:`~diced.array.indexing` (the pure selection planner);
* :mod:`~diced.array.codecs` (chunk codecs, DVID's label block with its numba kernels);
* kernels on plain numpy arrays, each a public module validating inputs in front of a private
  numba module: :mod:`~diced.array.downres` (2x pyramids), :mod:`~diced.array.labelstats`
  (per-block label counts, relabelling, masks) and :mod:`~diced.array.sparsevol` (DVID's
  sparse-volume encodings);
* :mod:`~diced.array.resultpool`, the recycled result buffers of reads.

The stateful types built on them (``VersionedArray``, ``LabelArray`` with its edits and merge
support) are datatypes and live in :mod:`diced.datatypes` (one package each), because they
depend on the repo; keeping the kernels here lets the exporters and tests use them without a
repo, and keeps "what a chunk is" apart from "how an instance is versioned".
"""
