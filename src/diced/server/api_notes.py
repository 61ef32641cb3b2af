"""The endpoints of ``diced serve`` and their shapes (DVID's API; notes for web clients).

Coordinates in URLs are DVID's: **x, y, z** order, absolute voxel coordinates at the
requested scale, ``_``-separated (``64_64_1``). numpy arrays in diced are (z, y, x); the
server converts. Errors are plain text: 400 bad request (also mutations of locked nodes),
401 token missing, 403 read-only server, 404 unknown path / repo / version / instance / key,
405 method, 413 body too large. Every response carries ``Access-Control-Allow-Origin``.

A ``{uuid}`` is a full UUID, a unique prefix, ``prefix:branch``, ``:branch`` (one repo only),
``branch~N`` or a tag name.

Server and repos
----------------
``GET /api/server/info`` -> ``{"Cores": "2", "DVID Version": "...", "Storage backend": ...}``
(string values). ``GET /api/server/types`` -> ``{typename: url}``. ``GET /api/help``.

``GET /api/repos/info`` -> ``{rootUUID: repoJSON}``; ``GET /api/repo/{uuid}/info`` ->
repoJSON::

    {"Root": uuid, "Alias": str, "Description": str, "Log": [str], "Properties": {},
     "DataInstances": {name: instanceInfo},
     "DAG": {"Root": uuid, "Nodes": {uuid: {
         "UUID": uuid, "VersionID": int, "Branch": "" (master) | name, "Note": str,
         "Log": [str], "Locked": bool, "Parents": [versionID], "Children": [versionID],
         "Created": "2026-12-01T14:53:08.123Z", "Updated": ...}}},
     "MutationID": int, "SavedMutationID": int, "Created": ..., "Updated": ...}

Parents/Children are VersionIDs (map them through ``Nodes[*].VersionID``). A tag is a locked
child node whose UUID is the tag name and whose Branch is ``"tag-<name>"``; a merge node has
several Parents.

``POST /api/repos {"alias", "description"}`` -> ``{"root": uuid}``;
``POST /api/repo/{uuid}/instance {"typename": "uint8blk"|"labelmap"|"keyvalue"|...,
"dataname": name, "BlockSize": "64,64,64", "VoxelSize": "8,8,8"}`` (string values);
``POST /api/repo/{uuid}/merge {"parents": [uuid, uuid], "note"}`` -> ``{"child": uuid}``;
``GET /api/repo/{uuid}/branch-versions/{name}`` -> ``[uuid leaf ... root]``.

Nodes
-----
``GET /api/node/{uuid}/status`` -> ``{"Locked": bool}``;
``POST .../commit {"note", "log": []}`` -> ``{"committed": uuid}``;
``POST .../branch {"branch": name}`` / ``.../newversion {}`` -> ``{"child": uuid}``;
``POST .../tag {"tag": name}`` -> ``{"child": name}``;
``GET/POST .../note`` ``{"note": str}``; ``GET/POST .../log`` ``{"log": [str]}``.

Instances: ``/api/node/{uuid}/{name}/{keyword}/...``
------------------------------------------------------
``info`` -> ``{"Base": {"TypeName", "Name", "Compression", "DataUUID", "RepoUUID", ...},
"Extended": {"Values": [{"DataType": "uint8", "Label": ...}], "BlockSize": [x, y, z],
"VoxelSize": [8.0, 8.0, 8.0], "VoxelUnits": [...], "MinPoint": [x, y, z], "MaxPoint":
[x, y, z] (inclusive), "MaxDownresLevel": n, ...}, "Extents": {"MinPoint", "MaxPoint"}}``.
``MinPoint``/``MaxPoint`` are the array's declared extent (its shape), not only where data
was written. ``Base.Checksum`` is ``"CRC32C checksum"``: every stored value carries one.

``written-extents`` (diced extension, image and label arrays) -> ``{"MinPoint": [x, y, z],
"MaxPoint": [x, y, z] (inclusive), "Chunks": n, "Complete": bool, "Declared": {"MinPoint",
"MaxPoint"}}``: the chunk-aligned box of the chunks stored at the version (``null`` points when
nothing is stored). One listing of the stored chunks, cached for locked versions; above
``diced.server.extents.MAX_CHUNKS`` stored chunks (the listing stops there on LMDB) ``Complete``
is false, ``Chunks`` a lower bound and the declared extent is answered. The web page and its Neuroglancer link open at its centre.
labelmap adds ``MaxLabel``, ``MaxRepoLabel``, ``NextLabel``, ``IndexedLabels``;
``MaxDownresLevel`` is at least 1 for labelmap (Neuroglancer requires it): scales past the
stored pyramid are computed on the fly. keyvalue: ``{"Base", "Extended": {}}``.

Image arrays (``uint8blk``, ``uint16blk``, ``float32blk``, ...):
``raw/0_1_2/{sx_sy_sz}/{x_y_z}`` -> octet-stream, (z, y, x) C order little-endian;
``raw/0_1_2/.../jpeg`` -> one JPEG, width sx, height sy*sz (Neuroglancer's RAW encoding);
``raw/0_1/{sx_sy}/{x_y_z}[/png|/jpg[:q]]`` (also ``0_2``, ``1_2``, ``xy``, ``xz``, ``yz``)
-> a PNG (default) or JPEG slice; ``?scale=N`` for pyramids (computed past ``max_scale``).
uint8 slices are 8-bit gray; uint16 PNG is 16-bit gray; other dtypes are scaled to 8 bits.
``subvolblocks/{size}/{offset}`` (block-aligned) -> ``[i32 bx][i32 by][i32 bz][i32 n][JPEG]``
per stored block; ``specificblocks?blocks=x,y,z,...``; ``metadata``; ``isotropic`` (as raw).

Labels (``labelmap``): ``raw`` as above with ``?compression=lz4|gzip|google|googlegzip``,
``scale=N``, ``supervoxels=true``; 2-D PNG slices hold the low 32 bits of each label as RGBA
bytes (R = lowest byte). ``label/{x_y_z}`` -> ``{"Label": n}``; ``labels`` (GET with JSON body
``[[x,y,z],...]``) -> ``[n, ...]``; ``blocks``, ``sparsevol``, ``size``, ``supervoxels``,
``mapping``, ``maxlabel``, ``nextlabel``, ``merge``, ``cleave``, ``mutations``, ``index``, ...
as DVID (see ``/api/help/labelmap``). ``blocks?compression=blocks`` sends each stored block
re-gzipped (same labels as DVID's verbatim copy, not the same gzip bytes).

Differences from DVID worth knowing: instances created through the API start with the extent
of one block and grow as data is written (DVID has no extent); ``u=``/``app=`` are accepted
but not recorded; POST ``index``/``indices``/``mappings``/``maxlabel``, annotation and ROI
types answer 400.

Keyvalue: ``keys`` -> ``[key, ...]``; ``key/{key}`` GET/POST/DELETE/HEAD (raw bytes);
``keyrange/{k1}/{k2}``; ``keyvalues`` (protobuf or ``?json=true``).
"""
