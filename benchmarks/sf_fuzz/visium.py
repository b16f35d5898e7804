"""Fuzz cases for the Visium reader (:func:`spatialfuse.io.read_visium`).

Bases are small Space Ranger folders written here (2.x with a header and HDF5 counts, 1.x without
a header, gzipped and plain MTX counts, a Visium HD bin folder with Parquet positions) and the
shared real folders (images left out to keep cases fast). A case mutates one or more of their
files: the positions CSV (cells, rows, columns, header, delimiter, quoting, bytes), the scale
factors JSON (values, types, nesting), the images (truncation, bit flips, declared dimensions), the
count matrix (HDF5 bytes and structure: ``shape``, ``indptr``, ``indices``, barcodes; MTX header
sizes and entries), or removes and replaces whole files. A read must match an independent parse of
the positions file and of the count matrix; mutations that keep the meaning (row order, blank
lines, CRLF, key order) must read the same as the base.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import re
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sf_fuzz import mutate
from sf_fuzz.runner import Case, CheckFailed
from spatialfuse.io.visium import POSITION_COLUMNS

REPO = Path(__file__).resolve().parents[2]
_MAX_REAL_FILE = 1 << 20
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@dataclass
class Base:
    name: str
    files: dict[str, bytes]
    target: str  # relative path given to read_visium
    positions: str  # relative path of the positions file
    counts: str | None  # relative path of the h5 / mtx folder, None where absent
    meaning: dict = field(default_factory=dict)  # what read_visium returns for the base
    parsed_positions: dict | None = None  # the reference parse of the unmutated positions file


@dataclass
class Context:
    bases: list[Base]
    by_name: dict[str, Base]


# --------------------------------------------------------------------------------------------------
# bases


def _synthetic_folder(folder: Path, rng) -> None:
    from spatialfuse.datasets._writers import write_visium

    rows, cols = 6, 12
    array_row, array_col = [], []
    for r in range(rows):
        for c in range(r % 2, cols, 2):
            array_row.append(r)
            array_col.append(c)
    array_row, array_col = np.array(array_row), np.array(array_col)
    pitch_px = 50.0  # 100 µm at 2 µm per pixel
    pxl_col = 20 + array_col * pitch_px / 2
    pxl_row = 20 + array_row * pitch_px * math.sqrt(3) / 2
    n = len(array_row)
    barcodes = np.array(sorted(f"{''.join(rng.choice(list('ACGT'), 16))}-1" for _ in range(n)))
    image = (rng.random((340, 340, 3)) * 255).astype(np.uint8)
    write_visium(
        folder,
        barcodes=barcodes,
        in_tissue=(rng.random(n) < 0.8).astype(np.int64),
        array_row=array_row,
        array_col=array_col,
        pxl_row=pxl_row,
        pxl_col=pxl_col,
        counts=rng.poisson(2.0, (n, 12)).astype(np.int64),
        gene_ids=np.array([f"ENSG{i:05d}" for i in range(12)]),
        gene_names=np.array([f"G{i % 10}" for i in range(12)]),  # some names repeat
        fullres=image,
        um_per_px=2.0,
        library_id="fuzz",
    )


def _read_tree(folder: Path, prefix: str = "") -> dict[str, bytes]:
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            files[prefix + str(path.relative_to(folder))] = path.read_bytes()
    return files


def _mtx_files(h5: bytes, folder: Path, gz: bool) -> dict[str, bytes]:
    import h5py
    import scipy.io
    from scipy import sparse

    path = folder / "m.h5"
    path.write_bytes(h5)
    with h5py.File(path, "r") as fh:
        g = fh["matrix"]
        matrix = sparse.csc_matrix(
            (g["data"][:], g["indices"][:], g["indptr"][:]), shape=tuple(g["shape"][:])
        )
        barcodes = [b.decode() for b in g["barcodes"][:]]
        ids = [b.decode() for b in g["features"]["id"][:]]
        names = [b.decode() for b in g["features"]["name"][:]]
    buffer = io.BytesIO()
    scipy.io.mmwrite(buffer, sparse.coo_matrix(matrix))
    mtx = buffer.getvalue()
    features = "".join(f"{i}\t{n}\tGene Expression\n" for i, n in zip(ids, names, strict=True))
    barcode_text = "".join(f"{b}\n" for b in barcodes)
    if gz:
        return {
            "matrix.mtx.gz": gzip.compress(mtx, mtime=0),
            "features.tsv.gz": gzip.compress(features.encode(), mtime=0),
            "barcodes.tsv.gz": gzip.compress(barcode_text.encode(), mtime=0),
        }
    return {
        "matrix.mtx": mtx,
        "features.tsv": features.encode(),
        "barcodes.tsv": barcode_text.encode(),
    }


def _real_bases() -> list[Base]:
    env = os.environ.get("SPATIALFUSE_TEST_DATA")
    root = (Path(env) if env else REPO.parent / "shared" / "data") / "visium"
    if not root.is_dir():
        return []
    bases = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        outs = folder / "outs" if (folder / "outs" / "spatial").is_dir() else folder
        files = {
            rel: data
            for rel, data in _read_tree(outs).items()
            if len(data) <= _MAX_REAL_FILE and not rel.endswith((".png", ".jpg", ".txt", ".md"))
        }
        positions = next((r for r in files if r.startswith("spatial/tissue_positions")), None)
        if positions is None:
            continue
        counts = next((r for r in files if r.endswith(".h5")), None)
        if counts is None and any(r.startswith("raw_feature_bc_matrix/") for r in files):
            counts = "raw_feature_bc_matrix"
        bases.append(Base(f"real/{folder.name}", files, ".", positions, counts))
    return bases


def setup(workdir: Path) -> Context:
    import pandas as pd

    rng = np.random.default_rng(1234)
    folder = workdir / "bases" / "outs"
    _synthetic_folder(folder, rng)
    sr2 = _read_tree(folder)
    h5 = sr2["filtered_feature_bc_matrix.h5"]
    bases = [
        Base("sr2_h5", sr2, ".", "spatial/tissue_positions.csv", "filtered_feature_bc_matrix.h5")
    ]
    sr1 = {k: v for k, v in sr2.items() if k != "spatial/tissue_positions.csv"}
    sr1["spatial/tissue_positions_list.csv"] = b"".join(
        sr2["spatial/tissue_positions.csv"].splitlines(keepends=True)[1:]
    )
    bases.append(
        Base(
            "sr1_list",
            sr1,
            ".",
            "spatial/tissue_positions_list.csv",
            "filtered_feature_bc_matrix.h5",
        )
    )
    for gz in (True, False):
        files = {k: v for k, v in sr2.items() if not k.endswith(".h5")}
        for name, data in _mtx_files(h5, workdir / "bases", gz).items():
            files[f"filtered_feature_bc_matrix/{name}"] = data
        bases.append(
            Base(
                f"mtx_{'gz' if gz else 'plain'}",
                files,
                ".",
                "spatial/tissue_positions.csv",
                "filtered_feature_bc_matrix",
            )
        )
    frame = pd.read_csv(io.BytesIO(sr2["spatial/tissue_positions.csv"]))
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    hd = {k: v for k, v in sr2.items() if k != "spatial/tissue_positions.csv"}
    hd["spatial/tissue_positions.parquet"] = buffer.getvalue()
    scale = json.loads(sr2["spatial/scalefactors_json.json"])
    scale.update({"microns_per_pixel": 2.0, "bin_size_um": 100.0})
    hd["spatial/scalefactors_json.json"] = json.dumps(scale).encode()
    bases.append(
        Base(
            "hd_parquet",
            hd,
            ".",
            "spatial/tissue_positions.parquet",
            "filtered_feature_bc_matrix.h5",
        )
    )
    bases += _real_bases()
    for base in bases:
        base.meaning = _base_meaning(base, workdir / "check")
        if base.positions.endswith(".csv"):
            base.parsed_positions = _reference_positions(base.files[base.positions])
    return Context(bases, {b.name: b for b in bases})


def _base_meaning(base: Base, folder: Path) -> dict:
    import shutil

    from sf_fuzz.runner import write_case
    from spatialfuse.io import read_visium

    shutil.rmtree(folder, ignore_errors=True)
    case = Case(files=base.files, target=base.target, base=base.name, mutations=[])
    target = write_case(case, folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = read_visium(target, **_arguments(base))
    return _summary(adata)


def _arguments(base: Base) -> dict:
    if base.counts is None:
        return {"require_counts": False}
    return {"counts_file": base.counts}


def describe_bases(ctx: Context) -> list[str]:
    return [f"{b.name} ({b.meaning.get('n_obs', '?')} spots)" for b in ctx.bases]


def base_reads(ctx: Context, name: str) -> bool:
    return bool(ctx.by_name[name].meaning)


# --------------------------------------------------------------------------------------------------
# mutators: (ctx, base, files, rng) -> label; they edit ``files`` in place


def _csv_lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def m_positions_text(ctx, base, files, rng):
    rel = base.positions
    if rel not in files:
        return "positions:none"
    data = files[rel]
    if rng.random() < 5 / 6:
        files[rel], kind = mutate.damage(data, rng)
        return f"positions:{kind}"
    texts = [v for k, v in files.items() if k.endswith((".csv", ".json", ".tsv"))]
    other = mutate.pick(rng, texts, default=data)
    files[rel] = mutate.splice(data, other, rng)
    return "positions:splice"


def m_positions_cells(ctx, base, files, rng):
    rel = base.positions
    if rel not in files:
        return "positions:cells:none"
    if rel.endswith(".parquet"):
        return _parquet_edit(files, rel, rng)
    lines = _csv_lines(files[rel])
    if len(lines) < 2:
        return "positions:cells:none"
    variant = int(rng.integers(8))
    i = int(rng.integers(1, len(lines)))
    if variant == 0:  # one cell
        cells = lines[i].rstrip(b"\r\n").split(b",")
        j = int(rng.integers(len(cells)))
        cells[j] = mutate.odd_number(rng, mutate.as_int(cells[j])).encode()
        if rng.random() < 0.2:
            cells[j] = mutate.pick(rng, (b"", b" ", b'"1"', b"1e400", b"-1", b"\xff", b"1.5"))
        lines[i] = b",".join(cells) + b"\n"
        label = "positions:cell"
    elif variant == 1:
        del lines[i]
        label = "positions:delete_row"
    elif variant == 2:
        lines.insert(i, lines[i])
        label = "positions:duplicate_row"
    elif variant == 3:  # swap two columns everywhere
        a, b = rng.choice(6, 2, replace=False).tolist()
        out = []
        for line in lines:
            cells = line.rstrip(b"\r\n").split(b",")
            if len(cells) > max(a, b):
                cells[a], cells[b] = cells[b], cells[a]
            out.append(b",".join(cells) + b"\n")
        lines = out
        label = "positions:swap_columns"
    elif variant == 4:  # the header
        if lines[0].startswith(b"barcode"):
            choice = int(rng.integers(3))
            if choice == 0:
                del lines[0]
            elif choice == 1:
                lines[0] = lines[0].replace(b"array_row", b"arrayrow")
            else:
                lines[0] = lines[0].replace(b"\n", b",extra\n")
        else:
            lines.insert(0, b",".join(c.encode() for c in POSITION_COLUMNS) + b"\n")
        label = "positions:header"
    elif variant == 5:
        sep = mutate.pick(rng, (b";", b"\t", b" ", b"|"))
        lines = [line.replace(b",", sep) for line in lines]
        label = "positions:delimiter"
    elif variant == 6:
        lines = [line.rstrip(b"\r\n") + b",1\n" for line in lines[: len(lines) // 2]] + lines[
            len(lines) // 2 :
        ]
        label = "positions:ragged"
    else:  # every value of one numeric column absurd
        j = int(rng.integers(1, 6))
        value = mutate.pick(rng, (b"1e300", b"-1e300", b"9223372036854775808", b"nan", b"0"))
        out = []
        for k, line in enumerate(lines):
            cells = line.rstrip(b"\r\n").split(b",")
            if (k > 0 or not line.startswith(b"barcode")) and len(cells) > j:
                cells[j] = value
            out.append(b",".join(cells) + b"\n")
        lines = out
        label = "positions:column_absurd"
    files[rel] = b"".join(lines)
    return label


def _parquet_edit(files, rel, rng):
    import pandas as pd

    try:
        frame = pd.read_parquet(io.BytesIO(files[rel]))
    except Exception:  # already damaged by an earlier mutation
        return "positions:parquet:none"
    variant = int(rng.integers(4))
    column = mutate.pick(rng, list(frame.columns))
    if variant == 0:
        frame = frame.drop(columns=[column])
    elif variant == 1:
        frame[column] = mutate.pick(rng, (np.nan, np.inf, -1, 2**62, "x", None))
    elif variant == 2:
        frame = pd.concat([frame, frame.iloc[:3]])
    else:
        frame = frame.iloc[:0]
    buffer = io.BytesIO()
    try:
        frame.to_parquet(buffer, index=False)
    except Exception:
        return "positions:parquet:none"
    files[rel] = buffer.getvalue()
    return "positions:parquet"


def m_scalefactors(ctx, base, files, rng):
    rel = "spatial/scalefactors_json.json"
    if rel not in files:
        return "scalefactors:none"
    variant = int(rng.integers(6))
    if variant < 2:
        files[rel], kind = mutate.damage(files[rel], rng, ("truncate", "flip_bits"))
        return f"scalefactors:{kind}"
    if variant == 2:
        depth = int(mutate.pick(rng, (100, 1000, 10_000, 100_000)))
        nest = (
            mutate.deep_nesting(depth, b"[", b"]")
            if rng.random() < 0.5
            else (b'{"a":' * depth + b"1" + b"}" * depth)
        )
        where = int(rng.integers(2))
        files[rel] = nest if where == 0 else files[rel].replace(b"{", b'{"deep": ' + nest + b",", 1)
        return "scalefactors:deep_nesting"
    if variant == 3:
        files[rel] = mutate.pick(rng, (b"[]", b"null", b"1", b'"x"', b"", b"{}", b"\xff\xfe"))
        return "scalefactors:not_an_object"
    try:
        data = json.loads(files[rel])
    except (ValueError, RecursionError):
        return "scalefactors:none"
    if not isinstance(data, dict) or not data:
        return "scalefactors:none"
    key = mutate.pick(rng, [*data, "microns_per_pixel", "bin_size_um"])
    if variant == 4:
        data[key] = mutate.pick(
            rng,
            (
                0,
                -1,
                1e-300,
                1e300,
                1e400,
                "1.5",
                "x",
                None,
                True,
                [],
                {"a": 1},
                2**70,
                float("nan"),
            ),
        )
        files[rel] = json.dumps(data, allow_nan=True).encode().replace(b"Infinity", b"1e400")
        return "scalefactors:value"
    data.pop(key, None)
    files[rel] = json.dumps(data).encode()
    return "scalefactors:remove_key"


def _png_with_size(data: bytes, width: int, height: int) -> bytes:
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) < 33:
        return data
    ihdr = bytearray(data[12:29])  # type + 13 bytes of IHDR data
    ihdr[4:12] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return data[:12] + bytes(ihdr) + crc + data[33:]


def m_image(ctx, base, files, rng):
    images = [k for k in files if k.endswith(".png")]
    if not images:
        return "image:none"
    rel = mutate.pick(rng, images)
    variant = int(rng.integers(5))
    if variant < 2:
        files[rel], kind = mutate.damage(files[rel], rng, ("truncate", "flip_bits"), lo=8)
        return f"image:{kind}"
    if variant == 2:
        size = int(mutate.pick(rng, (1, 2, 60_000, 100_000, 2**31 - 1)))
        other = int(mutate.pick(rng, (1, 340, 60_000)))
        files[rel] = _png_with_size(files[rel], size, other)
        return "image:declared_size"
    if variant == 3:
        files[rel] = _other_image(rng)
        return "image:other_kind"
    files[rel] = rng.integers(0, 256, int(rng.integers(0, 4096)), dtype=np.uint8).tobytes()
    return "image:random_bytes"


def _other_image(rng) -> bytes:
    from PIL import Image

    kind = mutate.pick(rng, ("JPEG", "GIF", "TIFF", "PNG16", "PNGP", "PNGL", "PNGA", "BMP"))
    array = (rng.random((20, 30, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(array)
    buffer = io.BytesIO()
    if kind == "PNG16":
        Image.fromarray(array[..., 0].astype(np.uint16) * 257).save(buffer, "PNG")
    elif kind == "PNGP":
        image.convert("P").save(buffer, "PNG")
    elif kind == "PNGL":
        image.convert("L").save(buffer, "PNG")
    elif kind == "PNGA":
        image.convert("RGBA").save(buffer, "PNG")
    else:
        image.save(buffer, kind)
    return buffer.getvalue()


def m_h5_bytes(ctx, base, files, rng):
    rels = [k for k in files if k.endswith(".h5")]
    if not rels:
        return "h5:none"
    rel = mutate.pick(rng, rels)
    files[rel], kind = mutate.damage(files[rel], rng, ("truncate", "flip_bits", "special_bytes"))
    return f"h5:{kind}"


def m_h5_structure(ctx, base, files, rng):
    import tempfile

    import h5py

    rels = [k for k in files if k.endswith(".h5")]
    if not rels:
        return "h5_structure:none"
    rel = mutate.pick(rng, rels)
    variant = int(rng.integers(9))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.h5"
        path.write_bytes(files[rel])
        try:
            with h5py.File(path, "r+") as fh:
                g = fh["matrix"]
                label = _edit_h5(g, variant, rng)
        except Exception:  # damaged by an earlier mutation
            return "h5_structure:none"
        files[rel] = path.read_bytes()
    return label


def _replace(group, name, values):
    del group[name]
    group[name] = values


def _edit_h5(g, variant, rng) -> str:
    if any(g[name].size > 10**7 for name in ("data", "indices", "indptr") if name in g):
        return "h5_structure:none"  # an earlier mutation declared it huge: reading it would be too
    if variant == 0:
        shape = g["shape"][:].astype(np.int64)
        which = int(rng.integers(2))
        shape[which] = mutate.pick(
            rng, (0, -1, 10**12, 2**31, shape[which] + 1, max(0, shape[which] - 1))
        )
        _replace(g, "shape", shape)
        return "h5_structure:shape"
    if variant == 1:
        indptr = g["indptr"][:].astype(np.int64)
        k = int(rng.integers(len(indptr)))
        indptr[k] = mutate.pick(rng, (-1, 0, 10**9, indptr[-1] + 1, indptr[k] + 5))
        _replace(g, "indptr", indptr)
        return "h5_structure:indptr"
    if variant == 2:
        indices = g["indices"][:].astype(np.int64)
        if indices.size:
            indices[int(rng.integers(indices.size))] = mutate.pick(rng, (-1, 10**6, 2**31 - 1, 12))
        _replace(g, "indices", indices)
        return "h5_structure:indices"
    if variant == 3:
        barcodes = g["barcodes"][:]
        choice = int(rng.integers(3))
        if choice == 0 and len(barcodes) > 1:
            barcodes[1] = barcodes[0]
        elif choice == 1:
            barcodes[0] = b""
        else:
            barcodes[0] = b"\xff\xfe-1"
        _replace(g, "barcodes", barcodes)
        return "h5_structure:barcodes"
    if variant == 4:
        name = mutate.pick(rng, ("data", "indices", "indptr", "shape", "barcodes", "features"))
        del g[name]
        return f"h5_structure:remove_{name}"
    if variant == 7:  # a dataset declaring far more values than the file holds (chunks unwritten)
        name = mutate.pick(rng, ("data", "indices", "barcodes"))
        dtype = g[name].dtype
        del g[name]
        g.create_dataset(
            name, shape=(int(mutate.pick(rng, (10**8, 10**10))),), dtype=dtype, chunks=(1 << 14,)
        )
        return "h5_structure:declared_huge"
    if variant == 5:
        data = g["data"][:]
        _replace(
            g,
            "data",
            mutate.pick(rng, (data.astype(np.float64) + 0.5, data.astype("S4"), data[:-1])),
        )
        return "h5_structure:data"
    if variant == 6:
        ids = g["features"]["id"][:]
        _replace(
            g["features"], "id", ids[:-1] if rng.random() < 0.5 else np.concatenate([ids, ids[:1]])
        )
        return "h5_structure:features"
    g.file.attrs["library_ids"] = mutate.pick(
        rng, (np.array([b"\xff"]), np.array([], dtype="S1"), 7)
    )
    return "h5_structure:attrs"


def _text_lines(files, part: str, rng):
    """A random file whose name holds ``part``, as lines (gunzipped): ``(path, lines)``."""
    rels = [k for k in files if part in k]
    if not rels:
        return None, None
    rel = mutate.pick(rng, rels)
    try:
        text = gzip.decompress(files[rel]) if rel.endswith(".gz") else files[rel]
    except (OSError, EOFError, zlib.error):  # damaged by an earlier mutation
        return None, None
    return rel, text.splitlines(keepends=True)


def m_mtx(ctx, base, files, rng):
    rel, lines = _text_lines(files, "matrix.mtx", rng)
    if rel is None:
        return "mtx:none"
    gz = rel.endswith(".gz")
    header = next((i for i, line in enumerate(lines) if not line.startswith(b"%")), None)
    variant = int(rng.integers(5))
    if variant <= 1 and header is not None:  # the declared rows, columns and entries
        numbers = lines[header].split()
        if len(numbers) == 3:
            k = int(rng.integers(3))
            numbers[k] = mutate.odd_number(rng, mutate.as_int(numbers[k])).encode()
            if variant == 1:
                numbers[2] = str(mutate.pick(rng, (10**9, 10**12, 2**63 - 1, 2**40))).encode()
            lines[header] = b" ".join(numbers) + b"\n"
        label = "mtx:declared_sizes"
    elif variant == 2 and header is not None and len(lines) > header + 1:
        i = int(rng.integers(header + 1, len(lines)))
        cells = lines[i].split()
        if cells:
            cells[int(rng.integers(len(cells)))] = mutate.odd_number(rng).encode()
            lines[i] = b" ".join(cells) + b"\n"
        label = "mtx:entry"
    elif variant == 3:
        lines = [mutate.truncate(b"".join(lines), rng)]
        label = "mtx:truncate"
    else:
        lines = [mutate.flip_bits(b"".join(lines), rng)]
        label = "mtx:flip_bits"
    text = b"".join(lines)
    files[rel] = gzip.compress(text, mtime=0) if gz and rng.random() < 0.9 else text
    return label


def m_tsv(ctx, base, files, rng):
    rel, lines = _text_lines(files, ".tsv", rng)
    if rel is None:
        return "tsv:none"
    gz = rel.endswith(".gz")
    variant = int(rng.integers(3))
    if variant == 0 and lines:
        del lines[int(rng.integers(len(lines)))]
        label = "tsv:delete_line"
    elif variant == 1 and lines:
        lines.insert(0, lines[0])
        label = "tsv:duplicate_line"
    else:
        lines = [mutate.flip_bits(b"".join(lines), rng)]
        label = "tsv:flip_bits"
    text = b"".join(lines)
    files[rel] = gzip.compress(text, mtime=0) if gz else text
    return label


def m_files(ctx, base, files, rng):
    rel = mutate.pick(rng, sorted(files))
    variant = int(rng.integers(3))
    if variant == 0:
        del files[rel]
        return f"file:remove:{rel.rsplit('/', 1)[-1]}"
    if variant == 1:
        files[rel] = b""
        return f"file:empty:{rel.rsplit('/', 1)[-1]}"
    data = files.pop(rel)
    files[rel + "/inside"] = data  # the file becomes a folder
    return f"file:folder:{rel.rsplit('/', 1)[-1]}"


# -- meaning-keeping mutations


def k_rows(ctx, base, files, rng):
    rel = base.positions
    if rel.endswith(".parquet") or rel not in files:
        return "keep:none"
    data = files[rel]
    bom = b"\xef\xbb\xbf" if data.startswith(b"\xef\xbb\xbf") else b""
    lines = _csv_lines(data[len(bom) :])
    head = [lines.pop(0)] if lines and lines[0].startswith(b"barcode") else []
    variant = int(rng.integers(4))
    if variant == 0:
        order = rng.permutation(len(lines))
        lines = [lines[i] for i in order]
        label = "keep:row_order"
    elif variant == 1:
        lines = [line.rstrip(b"\r\n") + b"\r\n" for line in lines]
        head = [h.rstrip(b"\r\n") + b"\r\n" for h in head]
        label = "keep:crlf"
    elif variant == 2:
        for _ in range(3):
            lines.insert(int(rng.integers(len(lines) + 1)), b"\n")
        label = "keep:blank_lines"
    else:
        files[rel] = b"\xef\xbb\xbf" + b"".join(head + lines)
        return "keep:bom"
    files[rel] = bom + b"".join(head + lines)
    return label


def k_scalefactors(ctx, base, files, rng):
    rel = "spatial/scalefactors_json.json"
    if rel not in files:
        return "keep:none"
    data = json.loads(files[rel])
    items = list(data.items())
    rng.shuffle(items)
    data = dict(items)
    if rng.random() < 0.5:
        data["unused_key"] = "x"
    files[rel] = json.dumps(data, indent=int(rng.integers(0, 5))).encode()
    return "keep:scalefactors_layout"


MUTATORS = (
    (3, m_positions_text),
    (4, m_positions_cells),
    (2, m_scalefactors),
    (1.5, m_image),
    (1.5, m_h5_bytes),
    (2, m_h5_structure),
    (1, m_mtx),
    (0.7, m_tsv),
    (1, m_files),
)
KEEPING = ((3, k_rows), (1, k_scalefactors))


def _choose(rng, table):
    weights = np.array([w for w, _ in table], dtype=float)
    return table[int(rng.choice(len(table), p=weights / weights.sum()))][1]


def make_case(ctx: Context, rng: np.random.Generator) -> Case:
    base = mutate.pick(rng, ctx.bases)
    files = dict(base.files)
    keeping = rng.random() < 0.12
    labels = []
    for _ in range(int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1]))):
        labels.append(_choose(rng, KEEPING if keeping else MUTATORS)(ctx, base, files, rng))
    target = base.target
    if rng.random() < 0.1 and base.counts and base.counts.endswith(".h5"):
        target = base.counts  # the count matrix itself is accepted as the path
    return Case(
        files=files,
        target=target,
        base=base.name,
        mutations=labels,
        preserving=keeping and all(not label.endswith(":none") for label in labels),
        extra={
            "load_images": bool(rng.random() < 0.5),
            "require_counts": base.counts is not None and rng.random() < 0.85,
        },
    )


# --------------------------------------------------------------------------------------------------
# references and checks


def _fail(message: str):
    raise CheckFailed("wrong_read", message)


def _summary(adata) -> dict:
    """What a read returned, in plain comparable form."""
    from scipy import sparse

    x = adata.X.toarray() if sparse.issparse(adata.X) else np.asarray(adata.X)
    return {
        "n_obs": adata.n_obs,
        "obs_names": list(adata.obs_names),
        "var_names": list(adata.var_names),
        "X": x,
        "in_tissue": np.asarray(adata.obs["in_tissue"]).tolist(),
        "array": np.stack([adata.obs["array_row"], adata.obs["array_col"]], axis=1).tolist(),
        "spatial": np.asarray(adata.obsm["spatial"]),
        "um_per_px": adata.uns["spatialfuse"]["um_per_px"],
    }


def _reference_positions(data: bytes):
    """Positions by barcode, parsed with the csv module; None where the file is irregular."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    rows = [row for row in csv.reader(io.StringIO(text, newline=""), skipinitialspace=True) if row]
    if not rows:
        return None
    has_header = rows[0][0].strip().strip('"').strip().lower() == "barcode"
    columns = list(range(6))
    if has_header:
        names = [c.strip().lower() for c in rows[0]]
        if all(c in names for c in POSITION_COLUMNS):
            if len(set(names)) != len(names):
                return None
            columns = [names.index(c) for c in POSITION_COLUMNS]
        elif len(names) != 6:
            return None
        width = len(names)
        rows = rows[1:]
    else:
        width = 6
    out = {}
    for row in rows:
        if len(row) != width or any("\x00" in cell or "\r" in cell or "\n" in cell for cell in row):
            return None
        cells = [row[c] for c in columns]
        barcode = cells[0].strip()
        if not barcode or barcode in out:
            return None
        values = []
        for k, cell in enumerate(cells[1:]):
            text = cell.strip()
            if not _NUMBER.fullmatch(text):
                return None
            number = float(text)
            if not math.isfinite(number):
                return None
            if k < 3:  # integer columns: the exact integer the text means
                if number != round(number):
                    return None
                number = int(number)
            values.append(number)
        out[barcode] = values
    return out


def _reference_h5(data: bytes, folder: Path):
    """Counts by barcode over the gene-expression features, read with h5py; None if irregular."""
    import h5py

    path = folder / "_ref.h5"
    path.write_bytes(data)
    try:
        with h5py.File(path, "r") as fh:
            g = fh["matrix"]
            barcodes = [b.decode("utf-8") for b in g["barcodes"][:]]
            values, indices = g["data"][:], g["indices"][:].astype(np.int64)
            indptr = g["indptr"][:].astype(np.int64)
            shape = [int(v) for v in g["shape"][:]]
            types = [t.decode() for t in g["features"]["feature_type"][:]]
    except Exception:
        return None
    finally:
        path.unlink()
    n_features = len(types)
    if (
        len(shape) != 2
        or shape != [n_features, len(barcodes)]
        or len(indptr) != len(barcodes) + 1
        or indptr[0] != 0
        or (np.diff(indptr) < 0).any()
        or indptr[-1] != len(values)
        or len(indices) != len(values)
        or (len(indices) and (indices.min() < 0 or indices.max() >= n_features))
        or values.dtype.kind not in "iuf"
        or len(set(barcodes)) != len(barcodes)
    ):
        return None
    keep = np.flatnonzero(np.array(types) == "Gene Expression")
    # scanpy stores int32 counts as float32, exactly as numpy casts them
    stored = values.astype(np.float32) if values.dtype == np.int32 else values
    out = {}
    for j, barcode in enumerate(barcodes):
        column = indices[indptr[j] : indptr[j + 1]]
        if np.unique(column).size != column.size:
            return None  # repeated entries are summed in the stored type: order-dependent
        row = np.zeros(n_features, dtype=stored.dtype)
        row[column] = stored[indptr[j] : indptr[j + 1]]
        out[barcode] = row[keep]
    return out


def _check(adata, case: Case, target: Path) -> bool:
    """Check a read; return whether everything was verified."""
    got = _summary(adata)
    n = got["n_obs"]
    if got["spatial"].shape != (n, 2) or got["spatial"].dtype != np.float64:
        _fail(f"obsm['spatial'] has shape {got['spatial'].shape}")
    um = got["um_per_px"]
    if not (isinstance(um, float) and math.isfinite(um) and um > 0):
        _fail(f"um_per_px is {um!r}")
    if not np.array_equal(adata.obsm["spatial_um"], (got["spatial"] + 0.5) * um):
        _fail("obsm['spatial_um'] is not (spatial + 0.5) · um_per_px")
    for key, image in adata.uns["spatial"][next(iter(adata.uns["spatial"]))]["images"].items():
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            _fail(f"image {key}: {image.dtype} {image.shape}")
    if got["X"].shape[0] != n:
        _fail(f"X has {got['X'].shape[0]} rows for {n} spots")
    verified = True
    positions = case.extra["base"].positions
    data = case.files.get(positions)
    cached = case.extra["base"].parsed_positions
    reference = (
        cached
        if data is not None and data == case.extra["base"].files.get(positions)
        else (
            _reference_positions(data) if data is not None and positions.endswith(".csv") else None
        )
    )
    if reference is None:
        verified = False
    else:
        missing = [b for b in got["obs_names"] if b not in reference]
        if missing:
            _fail(f"spot {missing[0]!r} is not in the positions file")
        want = [reference[b] for b in got["obs_names"]]
        ints = [[w[0], w[1], w[2]] for w in want]
        have = [[t, *a] for t, a in zip(got["in_tissue"], got["array"], strict=True)]
        if have != ints:
            i = next(k for k in range(n) if have[k] != ints[k])
            _fail(f"spot {got['obs_names'][i]}: {have[i]} vs file {ints[i]}")
        xy = np.array([[w[4], w[3]] for w in want], dtype=np.float64).reshape(-1, 2)
        close = np.isclose(got["spatial"], xy, rtol=1e-15, atol=0)
        if not close.all():
            i = int(np.flatnonzero(~close.all(axis=1))[0])
            _fail(f"spot {got['obs_names'][i]}: position {got['spatial'][i]} vs file {xy[i]}")
    counts = case.extra["base"].counts
    if counts and counts.endswith(".h5") and counts in case.files and n:
        matrix = _reference_h5(case.files[counts], target.parent if target.is_file() else target)
        if matrix is None:
            verified = False
        else:
            rows = [matrix.get(b) for b in got["obs_names"]]
            if any(r is None or r.shape != got["X"][0].shape for r in rows):
                _fail("a spot's counts are missing from the matrix file or of another length")
            if not np.array_equal(np.array(rows).reshape(got["X"].shape), got["X"]):
                _fail("counts differ from the matrix file")
    elif n and got["X"].shape[1]:
        verified = False
    return verified


def exercise(ctx: Context, case: Case, target: Path, rng: np.random.Generator) -> str:
    from spatialfuse.io import read_visium

    base = ctx.by_name[case.base]
    case.extra["base"] = base
    arguments = {**_arguments(base), "load_images": case.extra["load_images"]}
    if base.counts is not None and not case.extra["require_counts"]:
        arguments["require_counts"] = False
    adata = read_visium(target, **arguments)
    if case.preserving and base.meaning:
        got, want = _summary(adata), base.meaning
        for key in ("n_obs", "var_names", "um_per_px"):
            if got[key] != want[key]:
                _fail(f"a meaning-keeping mutation changed {key}: {got[key]!r} vs {want[key]!r}")
        order = {b: i for i, b in enumerate(want["obs_names"])}
        if sorted(got["obs_names"]) != sorted(want["obs_names"]):
            _fail("a meaning-keeping mutation changed the spots")
        index = [order[b] for b in got["obs_names"]]
        if not np.array_equal(got["spatial"], want["spatial"][index]) or not np.array_equal(
            got["X"], want["X"][index]
        ):
            _fail("a meaning-keeping mutation changed positions or counts")
    try:
        verified = _check(adata, case, target)
    except CheckFailed:
        raise
    except Exception as exc:  # a bug in the checks, not in the reader
        raise CheckFailed("harness_error", f"visium checks: {exc!r}") from exc
    return "read" if verified else "read_unverified"
