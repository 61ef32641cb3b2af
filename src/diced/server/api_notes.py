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
but not recorded; POST ``index``/``indices``/``mappings``/``maxlabel`` answer 400.

Keyvalue: ``keys`` -> ``[key, ...]``; ``key/{key}`` GET/POST/DELETE/HEAD (raw bytes);
``keyrange/{k1}/{k2}``; ``keyvalues`` (protobuf or ``?json=true``).

Annotation (``annotation``, dvid-reference §4.8; element JSON ``{"Pos": [x, y, z], "Kind":
"PreSyn"|"PostSyn"|"Gap"|"Note"|"Unknown", "Tags": [str], "Prop": {str: str}, "Rels": [{"Rel":
"PreSynTo"|..., "To": [x, y, z]}]}``, fields in that order, ``Tags``/``Prop``/``Rels`` answered
as ``[]``/``{}`` when empty): ``elements/{size}/{offset}`` -> ``[element]`` with ``Rels`` in the
box ``offset <= Pos < offset + size``; POST ``elements`` ``[element]`` adds or replaces by
position (all validated first; send both sides of a relationship); ``all-elements`` and
``blocks/{size}/{offset}`` -> ``{"bx,by,bz": [element]}`` (whole blocks of the instance's block
size, default 64, ``Extended.BlockSize``); POST ``blocks`` takes that shape;
``label/{id}``, ``tag/{tag}``, ``roi/{roi}[,{uuid}]`` -> ``[element]`` without ``Rels`` unless
``?relationships=true`` (``verbose`` adds the partner's ``Kind``/``Tags``/``Prop`` to each
relationship); ``label`` needs a sync to a labelmap (POST ``sync {"sync": "seg"}`` or the
``sync`` setting at creation; a sync cannot be changed later). DELETE ``element/{x_y_z}``
(partners drop their relationships; 404 if absent; GET it is a diced extension), POST ``move/{from}/{to}`` (400 if the
destination holds an element), POST ``reload`` rebuilds the tag and label indexes.
Not served: POST ``labels`` (diced derives the label index itself).

ROI (``roi``, §4.9): ``roi`` -> ``[[z, y, x0, x1], ...]`` block spans (x1 inclusive) in normal
form (sorted, touching spans merged: the same blocks DVID stores); POST ``roi`` replaces them
(a span with ``x1 < x0`` -> 400); DELETE ``roi``; ``mask/0_1_2/{size}/{offset}`` -> one u8 per
voxel, (z, y, x) C order, 1 inside; POST ``ptquery [[x, y, z], ...]`` -> ``[bool, ...]`` (a
read: allowed on locked nodes); ``partition?batchsize=N`` -> ``{"NumTotalBlocks",
"NumActiveBlocks", "NumSubvolumes", "ROI": {"MinChunk", "MaxChunk"}, "Subvolumes": [{"MinPoint",
"MaxPoint" (inclusive voxels), "MinChunk", "MaxChunk", "TotalBlocks", "ActiveBlocks"}]}``
(``optimized`` is accepted; the subvolumes are the same). ``info`` ``Extended``:
``{"BlockSize": [x, y, z], "MinZ", "MaxZ"}``; block size 32 unless ``BlockSize`` is set.

Labelsz (``labelsz``): counts of a synced annotation's elements per body, derived at each
request: ``count/{id}/{type}`` -> ``{"Label": id, "<type>": n}``; ``counts/{type}`` (GET or
POST, JSON body ``[id, ...]``) -> that object per id, in order; ``top/{n}/{type}`` and
``threshold/{t}/{type}?offset=&n=`` (page of 10000 when ``n`` is 0) -> objects, most first, ties
by ascending id. Types: ``PostSyn``, ``PreSyn``, ``Gap``, ``Note``, ``Unknown``, ``AllSyn``.
POST ``sync {"sync": "annotation"}`` (or the ``sync`` setting; ``ROI`` setting restricts the
counts to an ROI); POST ``reload`` is accepted and does nothing.

Neuronjson (``neuronjson``): keys are body ids as decimal strings. ``keys`` -> ``["id", ...]``
ascending; ``keyrange/{k1}/{k2}`` (numeric; a bound starting above ``9`` is the largest id);
``keyrangevalues/{k1}/{k2}`` (protobuf, ``?json=true`` or ``?tar=true``); ``key/{id}`` GET ->
the document (``{"bodyid": id, ...}``; ``?show=user|time|all`` adds ``<field>_user`` /
``<field>_time`` stamps, ``?fields=a,b`` selects), HEAD 200/404, POST a JSON object (needs
``?u=<user>``; updates the posted fields, ``null`` deletes one, ``?replace=true`` drops the
others, ``?conditionals=f1,f2`` keeps values already set), DELETE (404 if absent);
``keyvalues`` GET (protobuf Keys, or ``?json=true`` / ``?jsontar=true`` with a JSON list) and
POST (protobuf KeyValues of JSON documents, ``?u=``); ``query`` GET or POST (a read) with a
JSON object (fields ANDed; list values ORed; ``"re/<regex>"``, ``"exists/0|1"``) or a list of
objects (ORed) -> ``[document]`` (``?onlyid=true`` -> ``[id]``); ``all``; ``fields`` ->
``[name]``; ``fieldtimes`` -> ``{field: newest time}``.
"""
