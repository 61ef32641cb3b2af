"""DVID export-shards -> neuroglancer precomputed: the real DVID shard read back by TensorStore,
multi-shard pinky40 exports (1 and several workers, downres, verify, a killed run resumed,
S3), z-compression, and refused bad input that leaves DEST untouched."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import diced
from diced.array._downres_kernels import downsample_labels
from diced.array.codecs.labelblock import decode_block
from diced.cli import main
from diced.errors import (
    CorruptDataError,
    DicedError,
    FormatError,
    InvalidArgumentError,
)
from diced.export.convert_shards import ConversionError, convert_shards, verify_export
from diced.export.label_source import export_label_shards

ts = pytest.importorskip("tensorstore")
pytest.importorskip("compressed_segmentation")
pytest.importorskip("dask")

DATA = Path(__file__).parent / "data"
DVID = DATA / "dvid"
STEM = "30720_24576_28672"
MCNS = json.loads((DVID / "mcns-ng-specs.json").read_text())
SRC = str(Path(__file__).parents[1] / "src")


# --- helpers ------------------------------------------------------------------------------


def _read_ts(dest: str, scale: int, kvstore: dict | None = None) -> np.ndarray:
    """Whole scale through TensorStore's neuroglancer_precomputed driver, as (z, y, x)."""
    store = ts.open({"driver": "neuroglancer_precomputed",
                     "kvstore": kvstore or {"driver": "file", "path": dest},
                     "scale_index": scale}).result()
    return store[..., 0].read().result().transpose(2, 1, 0)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _dvid_records(arrow: Path) -> list[dict]:
    import zstandard

    out = []
    with pa.ipc.open_stream(pa.OSFile(str(arrow))) as reader:
        for batch in reader:
            for row in batch.to_pylist():
                row["voxels"] = decode_block(
                    zstandard.ZstdDecompressor().decompress(row["dvid_compressed_block"]))
                out.append(row)
    return out


def _real_source(tmp_path: Path, csv: str = "new") -> Path:
    src = tmp_path / "export"
    (src / "s1").mkdir(parents=True)
    shutil.copy(DVID / f"{STEM}.arrow", src / "s1" / f"{STEM}.arrow")
    name = f"{STEM}-newformat.csv" if csv == "new" else f"{STEM}.csv"
    shutil.copy(DVID / name, src / "s1" / f"{STEM}.csv")
    return src


def _pinky_spec(size: tuple[int, int, int] = (256, 256, 256), nscales: int = 3,
                preshift: int = 2, minishard: int = 1, chunk_z: int = 64) -> dict:
    scales = []
    for n in range(nscales):
        sz = [max(1, -(-s // 2 ** n)) for s in size]
        cz = chunk_z if n == 0 else 64
        grid = [-(-sz[0] // 64), -(-sz[1] // 64), -(-sz[2] // cz)]
        bits = sum(int(g - 1).bit_length() for g in grid)
        scales.append({
            "chunk_sizes": [[64, 64, cz]], "encoding": "compressed_segmentation",
            "compressed_segmentation_block_size": [8, 8, 8], "key": f"s{n}",
            "resolution": [8.0 * 2 ** n] * 3, "size": sz,
            "sharding": {"@type": "neuroglancer_uint64_sharded_v1", "hash": "identity",
                         "preshift_bits": preshift, "minishard_bits": minishard,
                         "shard_bits": max(0, bits - preshift - minishard),
                         "minishard_index_encoding": "gzip",
                         "data_encoding": "gzip" if n == 0 else "raw"}})
    return {"@type": "neuroglancer_multiscale_volume", "data_type": "uint64",
            "num_channels": 1, "type": "segmentation", "batch_size": 4, "scales": scales}


def _pinky_volume() -> np.ndarray:
    with gzip.open(DATA / "pinky40-256-zyx.npy.gz") as f:
        return np.load(f).astype(np.uint64)


def _labels(vol_zyx: np.ndarray, max_scale: int) -> diced.Repo:
    store = diced.Store(f"memory://convert-{uuid.uuid4().hex}")
    repo = store.create_repo("pinky")
    seg = repo.create_labels("seg", vol_zyx.shape, max_scale=max_scale)
    seg[...] = vol_zyx
    return seg


@pytest.fixture(scope="module")
def pinky(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 256^3 pinky40 piece exported by diced at scales 0 and 1 into 8 + 1 DVID shards."""
    vol = _pinky_volume()
    seg = _labels(vol, max_scale=1)
    spec = _pinky_spec()
    root = tmp_path_factory.mktemp("pinky")
    src = root / "export"
    for scale in (0, 1):
        export_label_shards(seg, spec, str(src), scale=scale, progress=False)
    spec_path = root / "spec.json"
    spec_path.write_text(json.dumps(spec))
    s1 = np.asarray(seg.scale(1)[...])
    return {"vol": vol, "s1": s1, "src": src, "spec": spec, "spec_path": spec_path,
            "root": root}


@pytest.fixture(scope="module")
def reference(pinky: dict) -> Path:
    """The pinky export converted with one worker (scales 0, 1 direct; 2 by downres)."""
    dest = pinky["root"] / "reference"
    convert_shards(pinky["src"], dest, pinky["spec"], scales=[0, 1], downres=[2], workers=1,
                   progress=False)
    return dest


# --- the real DVID shard ------------------------------------------------------------------


@pytest.mark.parametrize(("supervoxels", "csv"), [(False, "new"), (True, "old")])
def test_real_dvid_shard_reads_back_exactly_through_tensorstore(tmp_path, supervoxels, csv):
    src = _real_source(tmp_path, csv)
    dest = tmp_path / "ng"
    report = convert_shards(src, dest, DVID / "mcns-ng-specs.json", scales=[1],
                            supervoxels=supervoxels, workers=1, progress=False)
    assert report.ok and report.scales[0].chunks == 258 and report.scales[0].shards == 1
    assert [p.name for p in (dest / "16x16x16").iterdir()] == ["0fe9.shard"]
    store = ts.open({"driver": "neuroglancer_precomputed",
                     "kvstore": {"driver": "file", "path": str(dest)},
                     "scale_index": 1}).result()
    for row in _dvid_records(DVID / f"{STEM}.arrow"):
        want = row["voxels"]
        if not supervoxels:
            lookup = dict(zip(row["supervoxels"], row["labels"], strict=True))
            uniq, inverse = np.unique(want, return_inverse=True)
            bodies = np.array([lookup.get(int(v), int(v)) for v in uniq], np.uint64)
            want = bodies[inverse].reshape(want.shape)
        x, y, z = (row[f"chunk_{a}"] * 64 for a in "xyz")
        got = store[x:x + 64, y:y + 64, z:z + 64, 0].read().result().transpose(2, 1, 0)
        np.testing.assert_array_equal(got, want[:got.shape[0], :got.shape[1], :got.shape[2]])
    verify = verify_export(src, dest, DVID / "mcns-ng-specs.json", supervoxels=supervoxels,
                           sample=20, progress=False)
    assert verify.ok, verify.summary()
    assert verify.scales[0].chunks_found == 258 and verify.scales[0].sampled == 20


def test_bodies_and_supervoxels_differ_on_the_real_shard(tmp_path):
    src = _real_source(tmp_path)
    convert_shards(src, tmp_path / "b", MCNS, scales=[1], progress=False)
    convert_shards(src, tmp_path / "s", MCNS, scales=[1], supervoxels=True, progress=False)
    # the same chunks, with different ids: the mapping was applied
    assert _files(tmp_path / "b")["16x16x16/0fe9.shard"] != \
        _files(tmp_path / "s")["16x16x16/0fe9.shard"]
    # verify's sample catches chunks that decode to the wrong ids
    wrong = verify_export(src, tmp_path / "s", MCNS, sample=10, progress=False)
    assert not wrong.ok and wrong.scales[0].mismatched > 0
    assert "differs from its DVID block" in wrong.failures[0].reason
    assert "--overwrite --shards 30720_24576_28672" in wrong.failures[0].retry


# --- multi-shard exports -----------------------------------------------------------------


def test_pinky_converts_downres_and_verifies(pinky, reference):
    assert sorted(p.name for p in (reference / "s0").iterdir()) == \
        [f"{i}.shard" for i in range(8)]
    np.testing.assert_array_equal(_read_ts(str(reference), 0), pinky["vol"])
    np.testing.assert_array_equal(_read_ts(str(reference), 1), pinky["s1"])
    s1 = np.ascontiguousarray(_read_ts(str(reference), 1))
    want = np.empty((64, 64, 64), np.uint64)
    downsample_labels(s1, want)
    np.testing.assert_array_equal(_read_ts(str(reference), 2), want)
    info = json.loads((reference / "info").read_text())
    assert "batch_size" not in info and len(info["scales"]) == 3
    report = verify_export(pinky["src"], reference, pinky["spec"], sample=10, progress=False)
    assert report.ok, report.summary()
    assert [s.mode for s in report.scales] == ["direct", "direct", "downres"]
    assert report.scales[0].chunks_found == report.scales[0].chunks_expected == 64
    assert report.scales[2].sampled == 1


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_several_workers_write_the_same_bytes(pinky, reference, tmp_path, scheduler):
    dest = tmp_path / "ng"
    report = convert_shards(pinky["src"], dest, pinky["spec"], scales=[0, 1], downres=[2],
                            workers=3, scheduler=scheduler, progress=False)
    assert [s.shards for s in report.scales] == [8, 1, 1]
    assert _files(dest) == _files(reference)


def test_downres_of_scale0_equals_the_dvid_pyramid(pinky, tmp_path):
    dest = tmp_path / "ng"
    convert_shards(pinky["src"], dest, pinky["spec"], scales=[0], downres=[1, 2], workers=2,
                   progress=False)
    np.testing.assert_array_equal(_read_ts(str(dest), 1), pinky["s1"])
    report = verify_export(pinky["src"], dest, pinky["spec"], downres=[1], sample=3,
                           progress=False)
    assert report.ok, report.summary()
    assert [s.mode for s in report.scales] == ["direct", "downres", "downres"]


def test_memory_tiers_and_dry_run(pinky, tmp_path):
    dest = tmp_path / "ng"
    report = convert_shards(pinky["src"], dest, pinky["spec"], scales=[0], workers=4,
                            memory_limit=1, dry_run=True, progress=False)
    assert not dest.exists()
    assert report.dry_run and report.scales[0].planned == 8
    assert report.scales[0].tiers == {1: 8}  # nothing fits twice: one shard at a time
    report = convert_shards(pinky["src"], dest, pinky["spec"], scales=[0], workers=4,
                            dry_run=True, progress=False)
    assert report.scales[0].tiers == {4: 8} and report.scales[0].chunks == 64
    report = convert_shards(pinky["src"], dest, pinky["spec"], scales=[0], workers=4,
                            memory_limit=1, progress=False)
    assert report.scales[0].shards == 8


def test_killed_run_leaves_whole_shards_and_resumes(pinky, reference, tmp_path):
    dest = tmp_path / "ng"
    script = (
        "import sys, time\n"
        "import diced.export._ng_shards as ng\n"
        "orig = ng.ShardFileWriter.add\n"
        "def slow(self, *a, **k):\n"
        "    time.sleep(0.02)\n"
        "    return orig(self, *a, **k)\n"
        "ng.ShardFileWriter.add = slow\n"
        "from diced.cli import main\n"
        f"sys.exit(main(['convert-shards', {str(pinky['src'])!r}, {str(dest)!r}, '--spec', "
        f"{str(pinky['spec_path'])!r}, '--scales', '0', '--workers', '1', '--quiet']))\n")
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if list((dest / "s0").glob("*.shard")):
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the conversion ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    visible = sorted((dest / "s0").glob("*.shard"))
    assert 1 <= len(visible) < 8
    ref = _files(reference)
    for p in visible:  # whatever is visible is whole
        assert p.read_bytes() == ref[f"s0/{p.name}"]
    assert not verify_export(pinky["src"], dest, pinky["spec"], scales=[0], progress=False).ok
    with pytest.raises(InvalidArgumentError, match="only_missing"):
        convert_shards(pinky["src"], dest, pinky["spec"], scales=[0], progress=False)
    report = convert_shards(pinky["src"], dest, pinky["spec"], scales=[0], only_missing=True,
                            progress=False)
    assert report.scales[0].skipped == len(visible)
    assert report.scales[0].shards == 8 - len(visible)
    got = {k: v for k, v in _files(dest).items() if k.endswith(".shard")}
    assert got == {k: v for k, v in ref.items() if k.startswith("s0/")}
    assert verify_export(pinky["src"], dest, pinky["spec"], scales=[0], sample=5,
                         progress=False).ok


@pytest.mark.parametrize("protocol", ["s3", "gs"])
def test_object_store_source_and_destination(pinky, reference, request, protocol, tmp_path):
    import fsspec

    emulator = request.getfixturevalue("s3_emulator" if protocol == "s3" else "gcs_emulator")
    fs = fsspec.filesystem(protocol, **emulator.options)
    base = f"{emulator.bucket}/convert-{uuid.uuid4().hex}"
    fs.put(str(pinky["src"]) + "/", f"{base}/export/", recursive=True)
    fs.pipe(f"{base}/spec.json", json.dumps(pinky["spec"]).encode())
    src, dest = f"{protocol}://{base}/export", f"{protocol}://{base}/ng"
    spec = f"{protocol}://{base}/spec.json"
    report = convert_shards(src, dest, spec, scales=[0, 1], downres=[2], workers=2,
                            progress=False, storage_options=emulator.options)
    assert report.ok and [s.shards for s in report.scales] == [8, 1, 1]
    ref = _files(reference)
    for rel, data in ref.items():
        assert fs.cat(f"{base}/ng/{rel}") == data, rel
    verify = verify_export(src, dest, spec, sample=4, progress=False,
                           storage_options=emulator.options,
                           json_report=tmp_path / "report.json")
    assert verify.ok, verify.summary()
    assert json.loads((tmp_path / "report.json").read_text())["ok"] is True
    leftovers = [p for p in fs.find(f"{base}/ng") if ".tmp-" in p]
    assert not leftovers


@pytest.mark.parametrize("chunk_z", [32, 64])
def test_z_compress_restores_native_z(tmp_path, chunk_z):
    vol = _pinky_volume()[:128, :128, :128]
    doubled = np.repeat(vol, 2, axis=0)  # a z-doubled export of vol
    seg = _labels(doubled, max_scale=0)
    src_spec = _pinky_spec(size=(128, 128, 256), nscales=1)
    export_label_shards(seg, src_spec, str(tmp_path / "export"), scale=0, progress=False)
    native = _pinky_spec(size=(128, 128, 128), nscales=1, chunk_z=chunk_z,
                         preshift=2 if chunk_z == 32 else 1)
    dest = tmp_path / "ng"
    report = convert_shards(tmp_path / "export", dest, native, z_compress=1, workers=2,
                            progress=False)
    assert report.ok
    np.testing.assert_array_equal(_read_ts(str(dest), 0), vol)
    verify = verify_export(tmp_path / "export", dest, native, z_compress=1, sample=6,
                           progress=False)
    assert verify.ok, verify.summary()
    assert not verify_export(tmp_path / "export", dest, native, sample=2, progress=False).ok


# --- verify and the command line ----------------------------------------------------------


def test_verify_names_missing_shards_and_cli_retries(pinky, reference, tmp_path, capsys):
    dest = tmp_path / "ng"
    shutil.copytree(reference, dest)
    (dest / "s0" / "5.shard").unlink()
    report_path = tmp_path / "report.json"
    args = ["verify-export", str(pinky["src"]), str(dest), "--spec", str(pinky["spec_path"]),
            "--sample", "3", "--json-report", str(report_path), "--quiet"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "s0/5.shard: output shard file is missing" in out and "--only-missing" in out
    report = json.loads(report_path.read_text())
    assert report["ok"] is False and report["failures"][0]["output"] == "s0/5.shard"
    retry = report["failures"][0]["retry"].split()
    assert retry[:2] == ["diced", "convert-shards"]
    assert main(retry[1:] + ["--quiet"]) == 0
    assert main(args) == 0
    assert "OK: the export is complete" in capsys.readouterr().out
    assert _files(dest) == _files(reference)


def test_cli_convert_prints_a_summary(pinky, tmp_path, capsys):
    dest = tmp_path / "ng"
    assert main(["convert-shards", str(pinky["src"]), str(dest), "--spec",
                 str(pinky["spec_path"]), "--scales", "1", "--downres", "2",
                 "--scheduler", "sync", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "downres" in out and "direct" in out
    assert main(["convert-shards", str(pinky["src"]), str(dest), "--spec",
                 str(pinky["spec_path"]), "--scales", "1", "--dry-run"]) == 0
    assert "1 already present" in capsys.readouterr().out


# --- bad input ----------------------------------------------------------------------------


def _assert_untouched(dest: Path) -> None:
    assert not dest.exists() or not [p for p in dest.rglob("*") if p.is_file()]


def test_shard_mapping_to_two_output_shards_is_refused(pinky, tmp_path):
    big = _pinky_spec(preshift=4, minishard=2)  # one DVID shard per 4x4x4 chunks
    seg = _labels(pinky["vol"], max_scale=0)
    export_label_shards(seg, big, str(tmp_path / "export"), scale=0, progress=False)
    dest = tmp_path / "ng"
    with pytest.raises(FormatError, match=r"0_0_0\.arrow.*maps to neuroglancer shard"):
        convert_shards(tmp_path / "export", dest, pinky["spec"], scales=[0], progress=False)
    _assert_untouched(dest)


def test_truncated_arrow_file_is_refused(tmp_path):
    src = _real_source(tmp_path)
    arrow = src / "s1" / f"{STEM}.arrow"
    arrow.write_bytes(arrow.read_bytes()[:-5000])
    dest = tmp_path / "ng"
    with pytest.raises(CorruptDataError, match=rf"{STEM}\.arrow: truncated"):
        convert_shards(src, dest, MCNS, scales=[1], progress=False)
    _assert_untouched(dest)


def test_csv_disagreeing_with_its_arrow_file_fails_that_shard(tmp_path):
    src = _real_source(tmp_path)
    csv = src / "s1" / f"{STEM}.csv"
    lines = csv.read_text().splitlines()
    a, b = lines[2].split(","), lines[3].split(",")  # swap two rows' coordinates
    lines[2] = ",".join(b[:3] + a[3:])
    lines[3] = ",".join(a[:3] + b[3:])
    csv.write_text("\n".join(lines) + "\n")
    dest = tmp_path / "ng"
    with pytest.raises(ConversionError, match=r"CSV disagrees with the Arrow file") as info:
        convert_shards(src, dest, MCNS, scales=[1], progress=False)
    failure = info.value.report.failures[0]
    assert f"{STEM}.arrow" in failure.reason and "--only-missing" in failure.retry
    _assert_untouched(dest)
    report = convert_shards(src, dest, MCNS, scales=[1], progress=False,
                            raise_on_failure=False)
    assert report.scales[0].failed == 1 and not report.ok
    _assert_untouched(dest)


def test_spec_not_matching_the_export_is_refused(tmp_path):
    src = _real_source(tmp_path)
    spec = json.loads(json.dumps(MCNS))
    spec["scales"][1]["size"] = [20000, 20000, 20000]
    dest = tmp_path / "ng"
    with pytest.raises(FormatError, match=rf"{STEM}\.arrow.*outside the spec"):
        convert_shards(src, dest, spec, scales=[1], progress=False)
    _assert_untouched(dest)
    spec = json.loads(json.dumps(MCNS))
    spec["scales"][1]["sharding"].update(preshift_bits=6, shard_bits=19)  # smaller shards
    with pytest.raises(FormatError, match=rf"{STEM}\.arrow"):
        convert_shards(src, dest, spec, scales=[1], progress=False)
    _assert_untouched(dest)


def test_bad_arguments(tmp_path):
    src = _real_source(tmp_path)
    with pytest.raises(InvalidArgumentError, match="z_compress"):
        convert_shards(src, tmp_path / "ng", MCNS, z_compress=2, progress=False)
    with pytest.raises(InvalidArgumentError, match="scale 0 cannot"):
        convert_shards(src, tmp_path / "ng", MCNS, downres=[0], progress=False)
    with pytest.raises(InvalidArgumentError, match="scale 12"):
        convert_shards(src, tmp_path / "ng", MCNS, scales=[12], progress=False)
    with pytest.raises(DicedError, match="not a directory"):
        convert_shards(tmp_path / "nowhere", tmp_path / "ng", MCNS, progress=False)
    convert_shards(src, tmp_path / "ng", MCNS, scales=[1], progress=False)
    other = json.loads(json.dumps(MCNS))
    other["scales"][1]["resolution"] = [1.0, 1.0, 1.0]
    with pytest.raises(InvalidArgumentError, match="info differs"):
        convert_shards(src, tmp_path / "ng", other, scales=[1], only_missing=True,
                       progress=False)


def test_dvid_csv_with_schema_size_zero_is_read(tmp_path):
    """DVID writes the schema lazily, so its CSVs say schema_size=0 and the first row's range
    starts at byte 0 and covers the schema message too."""
    src = _real_source(tmp_path)
    csv = src / "s1" / f"{STEM}.csv"
    lines = csv.read_text().splitlines()
    assert lines[0] == "# schema_size=688"
    x, y, z, offset, size, b = lines[2].split(",")
    lines[0] = "# schema_size=0"
    lines[2] = ",".join([x, y, z, "0", str(int(offset) + int(size)), b])
    csv.write_text("\n".join(lines) + "\n")
    dest = tmp_path / "ng"
    convert_shards(src, dest, MCNS, scales=[1], progress=False)
    reference = tmp_path / "ref"
    convert_shards(_real_source(tmp_path / "again"), reference, MCNS, scales=[1], progress=False)
    assert _files(dest) == _files(reference)


def test_dask_distributed_cluster(pinky, reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  resources={"memory": 1 << 30}, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        report = convert_shards(pinky["src"], tmp_path / "ng", pinky["spec"], scales=[0, 1],
                                downres=[2], workers=2, scheduler=client, progress=False)
    assert report.ok and [s.shards for s in report.scales] == [8, 1, 1]
    assert _files(tmp_path / "ng") == _files(reference)


@pytest.mark.parametrize("variant", ["raw", "cseg16"])
def test_other_chunk_encodings(tmp_path, variant):
    """raw chunks and compressed_segmentation with 16^3 blocks go through the voxel path."""
    src = _real_source(tmp_path)
    spec = json.loads(json.dumps(MCNS))
    scale = spec["scales"][1]
    if variant == "raw":
        scale["encoding"] = "raw"
    else:
        scale["compressed_segmentation_block_size"] = [16, 16, 16]
    scale["sharding"]["data_encoding"] = "gzip"
    dest = tmp_path / "ng"
    convert_shards(src, dest, spec, scales=[1], supervoxels=True, progress=False)
    store = ts.open({"driver": "neuroglancer_precomputed",
                     "kvstore": {"driver": "file", "path": str(dest)},
                     "scale_index": 1}).result()
    for row in _dvid_records(DVID / f"{STEM}.arrow")[::37]:
        x, y, z = (row[f"chunk_{a}"] * 64 for a in "xyz")
        got = store[x:x + 64, y:y + 64, z:z + 64, 0].read().result().transpose(2, 1, 0)
        want = row["voxels"][:got.shape[0], :got.shape[1], :got.shape[2]]
        np.testing.assert_array_equal(got, want)
    assert verify_export(src, dest, spec, supervoxels=True, sample=5, progress=False).ok


def test_help_texts(capsys):
    for cmd in ("convert-shards", "verify-export"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0
        assert "examples:" in capsys.readouterr().out


def test_cloud_volume_reads_the_result(pinky, reference):
    cloudvolume = pytest.importorskip("cloudvolume")
    cv = cloudvolume.CloudVolume(reference.as_uri(), mip=0, progress=False)
    np.testing.assert_array_equal(np.asarray(cv[:, :, :])[..., 0].transpose(2, 1, 0),
                                  pinky["vol"])
    cv = cloudvolume.CloudVolume(reference.as_uri(), mip=1, progress=False)
    np.testing.assert_array_equal(np.asarray(cv[:, :, :])[..., 0].transpose(2, 1, 0),
                                  pinky["s1"])
