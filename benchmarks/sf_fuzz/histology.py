"""Fuzz cases for the histology reader (:func:`spatialfuse.io.read_histology`).

Bases are small images written here with tifffile, PIL and imagecodecs (plain, tiled, pyramidal
OME-TIFF with SubIFDs and physical sizes, BigTIFF, big-endian, planar, RGBA, 16-bit gray; LZW,
deflate, JPEG and PackBits compression; PNG and JPEG with and without density metadata) and the
real H&E crop in the shared data. A case damages the bytes (truncation, bit flips, cut, repeated
and spliced runs), edits TIFF directory entries through an independent IFD walker (image size,
strip and tile offsets and byte counts, bits per sample, samples per pixel, rows per strip, tile
size, compression, photometric, planar configuration, resolution and its unit, SubIFD and next-IFD
offsets, the type and count of entries), breaks the OME-XML (pixel sizes 0, negative, NaN, inf,
huge, units, sizes, truncation, entity declarations), PNG chunks (header sizes, depth, colour
type, pHYs, CRCs, IEND) or JPEG segments (frame size, components, density, markers), and opens
and reads the result: every level, a region, downsampled copies and the summary. Pixels are
compared with :mod:`.histology_reference`; meaning-keeping mutations (bytes appended after the
data, an XML comment in the OME-XML, a PNG text chunk, a JPEG comment) must read as the base.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sf_fuzz import histology_reference as ref
from sf_fuzz import mutate
from sf_fuzz.runner import Case, CheckFailed

REPO = Path(__file__).resolve().parents[2]
#: Pixel size given to the reader in most cases (so that reads go on where metadata is damaged).
GIVEN_SIZE = (0.5, 0.5)
#: Levels up to this many bytes are read whole; larger ones by a region and a downsample.
MAX_READ_BYTES = ref.MAX_LEVEL_BYTES


@dataclass
class Base:
    name: str
    data: bytes
    suffix: str
    meaning: object = None  # the reference decoding
    reads: dict = field(default_factory=dict)  # what the reader returns for the unmutated file


@dataclass
class Context:
    bases: list[Base]
    by_name: dict[str, Base]


# --------------------------------------------------------------------------------------------------
# bases


def _smooth_rgb(rng, h, w, dtype=np.uint8):
    """A smooth colour image with mild noise (compresses like tissue, not like noise or zeros)."""
    top = np.iinfo(dtype).max
    y, x = np.mgrid[0:h, 0:w]
    planes = [np.sin(x / (5 + 3 * c) + y / (7 + c)) for c in range(3)]
    image = (np.stack(planes, axis=-1) + 1) / 2 * 0.8 + rng.random((h, w, 3)) * 0.2
    return (image * top).astype(dtype)


def _ome_pyramid(path, rgb):
    import tifffile

    opts = {"tile": (16, 16), "compression": "zlib", "photometric": "rgb"}
    with tifffile.TiffWriter(path, ome=True) as tif:
        meta = {"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}
        tif.write(rgb, subifds=2, metadata=meta, **opts)
        tif.write(rgb[::2, ::2], subfiletype=1, **opts)
        tif.write(rgb[::4, ::4], subfiletype=1, **opts)


def _png_with_phys(array: np.ndarray, pixels_per_metre: int) -> bytes:
    import imagecodecs

    data = imagecodecs.png_encode(array)
    body = struct.pack(">IIB", pixels_per_metre, pixels_per_metre, 1)
    chunk = _png_chunk(b"pHYs", body)
    return data[:33] + chunk + data[33:]  # after the 8-byte signature and the 25-byte IHDR


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _generated(folder: Path, rng) -> list[tuple[str, Path]]:
    import tifffile
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rgb = _smooth_rgb(rng, 48, 64)
    out = []

    def tif(name, data, **kwargs):
        path = folder / name
        tifffile.imwrite(path, data, **kwargs)
        out.append((name, path))

    cm = {"resolution": (20000, 20000), "resolutionunit": "CENTIMETER"}
    tif("strips_rgb.tif", rgb, photometric="rgb", rowsperstrip=7, **cm)
    tif("tiled_deflate.tif", rgb[:45], photometric="rgb", tile=(16, 16), compression="zlib", **cm)
    path = folder / "pyramid.ome.tif"
    _ome_pyramid(path, rgb)
    out.append((path.name, path))
    tif(
        "jpeg_tiles.ome.tif",
        rgb,
        photometric="rgb",
        tile=(16, 16),
        compression="jpeg",
        metadata={"axes": "YXS", "PhysicalSizeX": 500, "PhysicalSizeXUnit": "nm"},
    )
    gray16 = (_smooth_rgb(rng, 40, 52, np.uint16)[..., 0]).copy()
    tif(
        "gray16_lzw.tif",
        gray16,
        compression="lzw",
        rowsperstrip=8,
        resolution=(50800, 50800),
        resolutionunit="INCH",
    )
    alpha = (rng.random((30, 40)) * 255).astype(np.uint8)
    alpha[:10] = 255
    rgba = np.concatenate([rgb[:30, :40], alpha[..., None]], axis=-1)
    tif(
        "rgba_packbits.tif",
        rgba,
        photometric="rgb",
        extrasamples=["unassalpha"],
        compression="packbits",
        **cm,
    )
    tif("bigtiff_gray.tif", rgb[:, :44, 1].copy(), bigtiff=True, tile=(16, 16), **cm)
    svs = "Aperio Image Library v10.0.51\r\n64x48 [0,0 64x48] (16x16) JPEG/RGB Q=70|MPP = 0.4990"
    tif("svs_like.tif", rgb, photometric="rgb", tile=(16, 16), compression="jpeg", description=svs)
    tif(
        "planar.tif",
        np.moveaxis(rgb[:20], -1, 0).copy(),
        photometric="rgb",
        planarconfig="separate",
    )
    tif("big_endian16.tif", _smooth_rgb(rng, 24, 20, np.uint16), photometric="rgb", byteorder=">")

    (folder / "rgba.png").write_bytes(_png_with_phys(rgba, 2_000_000))
    (folder / "gray16.png").write_bytes(_png_with_phys(gray16, 4_000_000))
    palette = Image.fromarray(rgb[:20, :30, 0] // 32, mode="L").convert("P")
    palette.info["transparency"] = 3
    palette.save(folder / "palette.png", transparency=3)
    out += [(n, folder / n) for n in ("rgba.png", "gray16.png", "palette.png")]

    Image.fromarray(rgb).save(folder / "density.jpg", quality=90, dpi=(50800, 50800))
    Image.fromarray(rgb[..., 1]).save(folder / "gray_progressive.jpg", progressive=True)
    out += [(n, folder / n) for n in ("density.jpg", "gray_progressive.jpg")]
    return out


def _real() -> list[tuple[str, Path]]:
    env = os.environ.get("SPATIALFUSE_TEST_DATA")
    root = (Path(env) if env else REPO.parent / "shared" / "data") / "histology"
    if not root.is_dir():
        return []
    return [
        (f"real/{p.name}", p)
        for p in sorted(root.rglob("*"))
        if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif", ".tiff") and p.is_file()
    ]


def setup(workdir: Path) -> Context:
    import logging

    # tifffile logs every damage it works around; the outcome is what the reader returns.
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    rng = np.random.default_rng(20260601)
    bases = []
    for name, path in _generated(workdir / "bases", rng) + _real():
        base = Base(name, path.read_bytes(), "".join(path.suffixes[-2:]) or ".img")
        check = workdir / "check"
        check.mkdir(parents=True, exist_ok=True)
        target = check / f"base{base.suffix}"
        target.write_bytes(base.data)
        base.meaning = ref.decode(target)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            base.reads = _summary(target, GIVEN_SIZE)
        bases.append(base)
    return Context(bases, {b.name: b for b in bases})


def _summary(path: Path, size) -> dict:
    """What the reader returns for ``path``: geometry, calibration and every level's pixels."""
    from spatialfuse.io.histology import read_histology

    img = read_histology(path, pixel_size_um=size)
    return {
        "level_shapes": img.level_shapes,
        "n_channels": img.n_channels,
        "dtype": img.dtype,
        "file_pixel_size_um": img.file_pixel_size_um,
        "file_pixel_size_source": img.file_pixel_size_source,
        "levels": [img.read(i) for i in range(img.n_levels)],
    }


def describe_bases(ctx: Context) -> list[str]:
    return [
        f"{b.name} ({'×'.join(map(str, b.reads['level_shapes'][0]))}, "
        f"{len(b.reads['level_shapes'])} levels)"
        for b in ctx.bases
    ]


def base_reads(ctx: Context, name: str) -> bool:
    return bool(ctx.by_name[name].reads)


# --------------------------------------------------------------------------------------------------
# TIFF directories, walked here without tifffile


_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_TYPE_SIZES.update({16: 8, 17: 8, 18: 8})
_INT_FORMATS = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 13: "I", 16: "Q", 17: "q", 18: "Q"}


@dataclass
class Entry:
    """One IFD entry: where its fields and its value are in the file."""

    tag: int
    type: int
    count: int
    pos: int  # of the entry
    value_pos: int  # of the value (inline in the entry, or where its offset points)
    big: bool
    endian: str

    @property
    def offset_field(self) -> int:
        return self.pos + (12 if self.big else 8)


def tiff_entries(data: bytes, limit: int = 64) -> list[Entry]:
    """Every entry of every IFD reachable from the header and through SubIFDs (at most ``limit``
    IFDs, each once)."""
    if len(data) < 16 or data[:2] not in (b"II", b"MM"):
        return []
    e = "<" if data[:2] == b"II" else ">"
    (version,) = struct.unpack(e + "H", data[2:4])
    big = version == 43
    if big:
        first = struct.unpack(e + "Q", data[8:16])[0]
    else:
        first = struct.unpack(e + "I", data[4:8])[0]
    todo, seen, out = [first], set(), []
    while todo and len(seen) < limit:
        at = todo.pop(0)
        if at in seen or at <= 0 or at + (8 if big else 2) > len(data):
            continue
        seen.add(at)
        n = struct.unpack(e + ("Q" if big else "H"), data[at : at + (8 if big else 2)])[0]
        size = 20 if big else 12
        pos = at + (8 if big else 2)
        if n > 4096 or pos + n * size + (8 if big else 4) > len(data):
            continue
        for i in range(n):
            p = pos + i * size
            if big:
                tag, typ, count = struct.unpack(e + "HHQ", data[p : p + 12])
            else:
                tag, typ, count = struct.unpack(e + "HHI", data[p : p + 8])
            nbytes = _TYPE_SIZES.get(typ, 1) * count
            inline = nbytes <= (8 if big else 4)
            field_at = p + (12 if big else 8)
            if inline:
                value_pos = field_at
            else:
                value_pos = struct.unpack(
                    e + ("Q" if big else "I"), data[field_at : field_at + (8 if big else 4)]
                )[0]
            entry = Entry(tag, typ, count, p, value_pos, big, e)
            out.append(entry)
            if tag == 330 and typ in _INT_FORMATS:  # SubIFDs
                todo += _read_ints(data, entry)
        end = pos + n * size
        nxt = struct.unpack(e + ("Q" if big else "I"), data[end : end + (8 if big else 4)])[0]
        todo.append(nxt)
    return out


def _read_ints(data: bytes, entry: Entry) -> list[int]:
    fmt = _INT_FORMATS.get(entry.type)
    if fmt is None:
        return []
    size = _TYPE_SIZES[entry.type]
    count = min(entry.count, 4096)
    end = entry.value_pos + size * count
    if end > len(data):
        return []
    return list(struct.unpack(f"{entry.endian}{count}{fmt}", data[entry.value_pos : end]))


def _write_ints(data: bytearray, entry: Entry, values, which: list[int]) -> None:
    """Write ``values`` into elements ``which`` of an integer entry (wrapped to its type)."""
    fmt = _INT_FORMATS[entry.type]
    size = _TYPE_SIZES[entry.type]
    bits = 8 * size
    for index, value in zip(which, values, strict=True):
        at = entry.value_pos + index * size
        if at + size > len(data):
            continue
        value = int(value) % (1 << bits)
        if fmt.islower() or fmt in ("b", "h", "i", "q"):
            value = value - (1 << bits) if value >= 1 << (bits - 1) else value
        data[at : at + size] = struct.pack(entry.endian + fmt, value)


def _write_rational(data: bytearray, entry: Entry, num: int, den: int) -> None:
    at = entry.value_pos
    if entry.type not in (5, 10) or at + 8 > len(data):
        return
    fmt = "I" if entry.type == 5 else "i"
    lo, hi = (0, 2**32 - 1) if fmt == "I" else (-(2**31), 2**31 - 1)
    data[at : at + 8] = struct.pack(
        entry.endian + fmt + fmt, min(max(num, lo), hi), min(max(den, lo), hi)
    )


_TAG_NAMES = {
    256: "ImageWidth",
    257: "ImageLength",
    258: "BitsPerSample",
    259: "Compression",
    262: "Photometric",
    273: "StripOffsets",
    277: "SamplesPerPixel",
    278: "RowsPerStrip",
    279: "StripByteCounts",
    282: "XResolution",
    283: "YResolution",
    284: "PlanarConfig",
    296: "ResolutionUnit",
    322: "TileWidth",
    323: "TileLength",
    324: "TileOffsets",
    325: "TileByteCounts",
    330: "SubIFDs",
    338: "ExtraSamples",
    339: "SampleFormat",
    254: "NewSubfileType",
}
_VALUE_CHOICES = {
    258: (0, 1, 2, 4, 7, 12, 16, 24, 32, 64, 255, 65535),
    259: (0, 1, 2, 5, 7, 8, 32773, 34925, 50000, 33003, 65535, 999),
    262: (0, 1, 2, 3, 4, 5, 6, 8, 32844, 34892, 65535),
    277: (0, 1, 2, 3, 4, 5, 8, 255, 65535),
    284: (0, 1, 2, 3),
    296: (0, 1, 2, 3, 4, 5, 6, 65535),
    338: (0, 1, 2, 3, 99),
    339: (0, 1, 2, 3, 4, 5, 6, 99),
    254: (0, 1, 2, 4),
}


def _odd_size(rng, old: int) -> int:
    roll = rng.random()
    if roll < 0.4:
        return int(mutate.pick(rng, (0, 1, 2, 255, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1)))
    if roll < 0.8:
        return int(mutate.pick(rng, (old + 1, old - 1, old * 2, old * 16, old * 1000, old // 2)))
    return int(rng.integers(0, 2**32))


def t_tag(ctx, base, data, rng):
    """Change the value of one directory entry (or all elements of it)."""
    entries = [e for e in tiff_entries(data) if e.tag in _TAG_NAMES]
    if not entries:
        return data, "tag:none"
    entry = mutate.pick(rng, entries)
    name = _TAG_NAMES[entry.tag]
    out = bytearray(data)
    if entry.tag in (282, 283):
        num, den = mutate.pick(
            rng,
            ((0, 0), (1, 0), (0, 1), (2**32 - 1, 1), (1, 2**32 - 1), (72, 1), (-5, 1), (10**6, 3)),
        )
        _write_rational(out, entry, num, den)
        return bytes(out), f"tag:{name}"
    if entry.type not in _INT_FORMATS:
        return data, "tag:none"
    old = _read_ints(data, entry)
    if not old:
        return data, "tag:none"
    which = list(range(len(old))) if rng.random() < 0.3 else [int(rng.integers(len(old)))]
    choices = _VALUE_CHOICES.get(entry.tag)
    if entry.tag in (273, 324):  # offsets: past the end, zero, into the header, shifted
        values = [
            int(mutate.pick(rng, (0, 1, 8, len(data), len(data) - 1, 2**32 - 1, old[i] + 3)))
            for i in which
        ]
    elif choices is not None:
        values = [int(mutate.pick(rng, choices)) for _ in which]
    else:
        values = [_odd_size(rng, old[i]) for i in which]
    _write_ints(out, entry, values, which)
    return bytes(out), f"tag:{name}{':all' if len(which) > 1 else ''}"


def t_entry_fields(ctx, base, data, rng):
    """Change the type or the count of an entry, or its offset field."""
    entries = tiff_entries(data)
    if not entries:
        return data, "entry:none"
    entry = mutate.pick(rng, entries)
    out = bytearray(data)
    variant = int(rng.integers(3))
    if variant == 0:
        new_type = int(mutate.pick(rng, (0, 1, 2, 3, 4, 5, 12, 16, 19, 255)))
        out[entry.pos + 2 : entry.pos + 4] = struct.pack(entry.endian + "H", new_type)
        return bytes(out), "entry:type"
    if variant == 1:
        count = int(mutate.pick(rng, (0, 1, 2, 2**16, 2**31, 2**32 - 1, entry.count + 1)))
        fmt, size = ("Q", 8) if entry.big else ("I", 4)
        count %= 1 << (8 * size)
        out[entry.pos + 4 : entry.pos + 4 + size] = struct.pack(entry.endian + fmt, count)
        return bytes(out), "entry:count"
    fmt, size = ("Q", 8) if entry.big else ("I", 4)
    at = entry.offset_field
    value = int(mutate.pick(rng, (0, 8, len(data), 2**32 - 1, entry.pos)))
    out[at : at + size] = struct.pack(entry.endian + fmt, value % (1 << (8 * size)))
    return bytes(out), "entry:offset_field"


def t_ifd_links(ctx, base, data, rng):
    """Point the next-IFD or SubIFD links at themselves, the first IFD, past the end or zero."""
    if len(data) < 16 or data[:2] not in (b"II", b"MM"):
        return data, "ifd_links:none"
    e = "<" if data[:2] == b"II" else ">"
    big = struct.unpack(e + "H", data[2:4])[0] == 43
    first = struct.unpack(e + ("Q" if big else "I"), data[8:16] if big else data[4:8])[0]
    entries = tiff_entries(data)
    out = bytearray(data)
    target = int(mutate.pick(rng, (first, 0, len(data) + 8, 3, 2**31)))
    if rng.random() < 0.5 or not any(x.tag == 330 for x in entries):
        n_at = first
        if n_at + (8 if big else 2) > len(data):
            return data, "ifd_links:none"
        n = struct.unpack(e + ("Q" if big else "H"), data[n_at : n_at + (8 if big else 2)])[0]
        link = n_at + (8 if big else 2) + n * (20 if big else 12)
        size = 8 if big else 4
        if link + size > len(data):
            return data, "ifd_links:none"
        out[link : link + size] = struct.pack(e + ("Q" if big else "I"), target % (1 << 8 * size))
        return bytes(out), "ifd_links:next"
    sub = next(x for x in entries if x.tag == 330)
    values = _read_ints(data, sub)
    if not values:
        return data, "ifd_links:none"
    _write_ints(out, sub, [target] * len(values), list(range(len(values))))
    return bytes(out), "ifd_links:subifds"


_OME_SIZE_VALUES = (
    "0",
    "-0.5",
    "-1",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "INF",
    "1e309",
    "1e300",
    "1e-320",
    "1e-300",
    "abc",
    "",
    "0x10",
    "5e5",
    "1,5",
    "\uff15",
    "0.25",
)


def _description(data: bytes) -> tuple[Entry, bytes] | None:
    for entry in tiff_entries(data, limit=1):
        if entry.tag == 270 and entry.type == 2 and entry.count > 0:
            end = entry.value_pos + entry.count
            if end <= len(data):
                return entry, data[entry.value_pos : end]
    return None


def _with_description(data: bytes, entry: Entry, text: bytes) -> bytes:
    """``data`` with its first ImageDescription replaced by ``text`` (written at the end)."""
    text = text.rstrip(b"\x00") + b"\x00"
    pad = len(data) % 2
    at = len(data) + pad
    out = bytearray(data + b"\x00" * pad + text)
    fmt, size = ("Q", 8) if entry.big else ("I", 4)
    out[entry.pos + 4 : entry.pos + 4 + size] = struct.pack(entry.endian + fmt, len(text))
    if len(text) <= size:
        out[entry.offset_field : entry.offset_field + size] = text.ljust(size, b"\x00")
    else:
        out[entry.offset_field : entry.offset_field + size] = struct.pack(entry.endian + fmt, at)
    return bytes(out)


def t_ome(ctx, base, data, rng):
    """Break the OME-XML (or an Aperio description): values, units, sizes, structure, entities."""
    found = _description(data)
    if found is None:
        return data, "ome:none"
    entry, text = found
    variant = int(rng.integers(8))
    label = "ome"
    if b"Aperio" in text[:20]:
        value = mutate.pick(rng, _OME_SIZE_VALUES).encode("utf-8")
        new = re.sub(rb"MPP = [^|\r\n]*", b"MPP = " + value, text)
        return _with_description(data, entry, new), "aperio:mpp"
    if variant <= 2:
        axis = mutate.pick(rng, (b"X", b"Y", b"XY"))
        value = mutate.pick(rng, _OME_SIZE_VALUES).encode("utf-8")
        new = text
        for ax in axis.decode():
            pattern = rb"PhysicalSize" + ax.encode() + rb'="[^"]*"'
            new = re.sub(pattern, b"PhysicalSize" + ax.encode() + b'="' + value + b'"', new)
        if new == text:  # no such attribute: add it
            new = text.replace(b"<Pixels ", b'<Pixels PhysicalSizeX="' + value + b'" ', 1)
        label = f"ome:size:{value.decode('utf-8', 'replace')}"
    elif variant == 3:
        unit = mutate.pick(rng, (b"pm", b"km", b"furlong", b"", b"\xc2\xb5m", b"in", b"Ym"))
        new = re.sub(rb'PhysicalSizeXUnit="[^"]*"', b'PhysicalSizeXUnit="' + unit + b'"', text)
        if new == text:
            new = text.replace(b"<Pixels ", b'<Pixels PhysicalSizeXUnit="' + unit + b'" ', 1)
        label = "ome:unit"
    elif variant == 4:
        attr = mutate.pick(rng, (b"SizeX", b"SizeY", b"SizeC", b"SizeZ", b"SizeT"))
        value = mutate.odd_number(rng).encode("utf-8")
        new = re.sub(rb"\b" + attr + rb'="[^"]*"', attr + b'="' + value + b'"', text)
        label = "ome:dimension"
    elif variant == 5:
        new = mutate.truncate(text, rng)
        label = "ome:truncated"
    elif variant == 6:
        bomb = (
            b'<?xml version="1.0"?><!DOCTYPE OME [<!ENTITY a "aaaaaaaaaa">'
            + b"".join(
                b'<!ENTITY %c "%s">' % (ord("b") + i, (b"&%c;" % (ord("a") + i)) * 10)
                for i in range(8)
            )
            + b"]>"
        )
        new = bomb + re.sub(rb"^<\?xml[^>]*\?>", b"", text).replace(b'Name="', b'Name="&i;', 1)
        label = "ome:entities"
    else:
        images = re.findall(rb"<Image\b.*?</Image>", text, re.S)
        if images:
            new = text.replace(images[0], images[0] * int(rng.integers(2, 4)), 1)
        else:
            new = text + b"<Image/>"
        label = "ome:images"
    if new == text:
        return data, "ome:none"
    return _with_description(data, entry, new), label


# --------------------------------------------------------------------------------------------------
# PNG and JPEG structure


def _png_chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """``(position, type, length)`` of each chunk, as far as they can be walked."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        out.append((pos, kind, length))
        pos += 12 + length
        if kind == b"IEND":
            break
    return out


def p_chunks(ctx, base, data, rng):
    """PNG header sizes, depth and colour type, pHYs, CRCs, chunk lengths, IEND, tRNS."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return data, "png:none"
    chunks = _png_chunks(data)
    if not chunks:
        return data, "png:none"
    out = bytearray(data)
    variant = int(rng.integers(7))
    ihdr = next((c for c in chunks if c[1] == b"IHDR"), None)
    fix_crc = rng.random() < 0.8

    def recrc(pos, length):
        if fix_crc and pos + 12 + length <= len(out):
            body = bytes(out[pos + 4 : pos + 8 + length])
            out[pos + 8 + length : pos + 12 + length] = struct.pack(">I", zlib.crc32(body))

    if variant == 0 and ihdr:
        which = int(rng.integers(2))
        at = ihdr[0] + 8 + 4 * which
        out[at : at + 4] = struct.pack(">I", _odd_size(rng, 40) % 2**32)
        recrc(ihdr[0], ihdr[2])
        return bytes(out), "png:ihdr_size"
    if variant == 1 and ihdr:
        at = ihdr[0] + 8 + 8 + int(rng.integers(5))
        out[at] = int(mutate.pick(rng, (0, 1, 2, 3, 4, 6, 7, 8, 16, 32, 255)))
        recrc(ihdr[0], ihdr[2])
        return bytes(out), "png:ihdr_fields"
    phys = next((c for c in chunks if c[1] == b"pHYs"), None)
    if variant == 2 and phys:
        at = phys[0] + 8
        value = int(mutate.pick(rng, (0, 1, 2, 39370, 2**31, 2**32 - 1, 10**9)))
        out[at : at + 8] = struct.pack(">II", value, value if rng.random() < 0.7 else 1)
        out[at + 8] = int(mutate.pick(rng, (0, 1, 2, 255)))
        recrc(phys[0], phys[2])
        return bytes(out), "png:phys"
    if variant == 3:
        pos, kind, length = mutate.pick(rng, chunks)
        out[pos : pos + 4] = struct.pack(
            ">I", int(mutate.pick(rng, (0, 1, 2**31, 2**32 - 1, length + 7)))
        )
        return bytes(out), f"png:length:{kind.decode('latin-1')}"
    if variant == 4:
        pos, kind, length = mutate.pick(rng, chunks)
        at = pos + 8 + length
        if at + 4 <= len(out):
            out[at] ^= 0xFF
        return bytes(out), f"png:crc:{kind.decode('latin-1')}"
    if variant == 5:
        iend = next((c for c in chunks if c[1] == b"IEND"), None)
        if iend:
            return bytes(out[: iend[0]]), "png:no_iend"
        return data, "png:none"
    if ihdr:  # a tRNS chunk (or a second IHDR) after the header
        extra = mutate.pick(
            rng, (_png_chunk(b"tRNS", b"\x00\x05"), _png_chunk(b"IHDR", bytes(data[16:29])))
        )
        at = ihdr[0] + 12 + ihdr[2]
        return data[:at] + extra + data[at:], "png:extra_chunk"
    return data, "png:none"


def _jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """``(position, marker, length)`` of the segments before the first scan's data."""
    out, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        out.append((pos, marker, length))
        if marker == 0xDA:
            break
        pos += 2 + length
    return out


def j_segments(ctx, base, data, rng):
    """JPEG frame size and components, density, tables, segment lengths, markers."""
    if data[:3] != b"\xff\xd8\xff":
        return data, "jpeg:none"
    segments = _jpeg_segments(data)
    out = bytearray(data)
    sof = next((s for s in segments if s[1] in (0xC0, 0xC1, 0xC2)), None)
    variant = int(rng.integers(6))
    if variant == 0 and sof:
        at = sof[0] + 5 + 2 * int(rng.integers(2))
        out[at : at + 2] = struct.pack(">H", int(mutate.pick(rng, (0, 1, 2, 8, 65535, 30000))))
        return bytes(out), "jpeg:frame_size"
    if variant == 1 and sof:
        at = sof[0] + int(mutate.pick(rng, (4, 9)))  # precision or component count
        out[at] = int(mutate.pick(rng, (0, 1, 2, 4, 12, 16, 255)))
        return bytes(out), "jpeg:frame_fields"
    app0 = next((s for s in segments if s[1] == 0xE0), None)
    if variant == 2 and app0 and data[app0[0] + 4 : app0[0] + 9] == b"JFIF\x00":
        at = app0[0] + 11
        out[at] = int(mutate.pick(rng, (0, 1, 2, 3, 255)))
        value = int(mutate.pick(rng, (0, 1, 72, 25400, 65535)))
        out[at + 1 : at + 5] = struct.pack(">HH", value, value if rng.random() < 0.7 else 1)
        return bytes(out), "jpeg:density"
    if variant == 3 and segments:
        pos, _, length = mutate.pick(rng, segments)
        out[pos + 2 : pos + 4] = struct.pack(
            ">H", int(mutate.pick(rng, (0, 1, 2, 65535, length + 3)))
        )
        return bytes(out), "jpeg:segment_length"
    if variant == 4:
        end = data.rfind(b"\xff\xd9")
        if end > 0:
            return data[:end] + data[end + 2 :], "jpeg:no_eoi"
        return data, "jpeg:none"
    if segments:  # a marker changed into another
        pos, _, _ = mutate.pick(rng, segments)
        out[pos + 1] = int(mutate.pick(rng, (0xC3, 0xC9, 0xCF, 0xC0, 0xDB, 0xC4, 0xD9, 0x01)))
        return bytes(out), "jpeg:marker"
    return data, "jpeg:none"


# --------------------------------------------------------------------------------------------------
# generic damage, other formats


def d_truncate(ctx, base, data, rng):
    return mutate.truncate(data, rng), "truncate"


def d_flip_header(ctx, base, data, rng):
    return mutate.flip_bits(data, rng, 0, min(len(data), 512)), "flip_header"


def d_flip(ctx, base, data, rng):
    return mutate.flip_bits(data, rng), "flip"


def d_damage(ctx, base, data, rng):
    damaged, kind = mutate.damage(data, rng, ("special_bytes", "delete_range", "duplicate_range"))
    return damaged, kind


def d_splice(ctx, base, data, rng):
    return mutate.splice(data, mutate.pick(rng, ctx.bases).data, rng), "splice"


def d_other(ctx, base, data, rng):
    from PIL import Image

    variant = int(rng.integers(5))
    if variant == 0:
        return b"", "other:empty"
    if variant == 1:
        return rng.integers(
            0, 256, int(rng.integers(1, 4096)), dtype=np.uint8
        ).tobytes(), "other:random"
    buffer = io.BytesIO()
    image = Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8))
    fmt = mutate.pick(rng, ("GIF", "BMP", "WEBP"))
    image.save(buffer, fmt)
    return buffer.getvalue(), f"other:{fmt.lower()}"


# -- meaning-keeping


def k_append(ctx, base, data, rng):
    return data + rng.integers(
        0, 256, int(rng.integers(1, 300)), dtype=np.uint8
    ).tobytes(), "keep:append"


def k_ome_comment(ctx, base, data, rng):
    found = _description(data)
    if found is None or b"<OME" not in found[1]:
        return data, "keep:none"
    entry, text = found
    at = text.find(b"<Image")
    if at < 0:
        return data, "keep:none"
    new = text[:at] + b'<!-- a comment with PhysicalSizeX="9" -->\n  ' + text[at:]
    return _with_description(data, entry, new), "keep:ome_comment"


def k_png_text(ctx, base, data, rng):
    chunks = _png_chunks(data)
    ihdr = next((c for c in chunks if c[1] == b"IHDR"), None)
    if ihdr is None:
        return data, "keep:none"
    at = ihdr[0] + 12 + ihdr[2]
    return data[:at] + _png_chunk(b"tEXt", b"Comment\x00fuzz") + data[at:], "keep:png_text"


def k_jpeg_comment(ctx, base, data, rng):
    segments = _jpeg_segments(data)
    if not segments or data[:2] != b"\xff\xd8":
        return data, "keep:none"
    pos, _, length = segments[0]
    at = pos + 2 + length if segments[0][1] == 0xE0 else 2
    comment = b"a comment \xff\x00 with bytes"
    return data[:at] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + data[
        at:
    ], "keep:jpeg_comment"


MUTATORS = (
    (3, t_tag),
    (1, t_entry_fields),
    (0.7, t_ifd_links),
    (2, t_ome),
    (1.5, p_chunks),
    (1.5, j_segments),
    (2, d_truncate),
    (1, d_flip_header),
    (1.5, d_flip),
    (1, d_damage),
    (0.5, d_splice),
    (0.3, d_other),
)
KEEPING = ((2, k_append), (1, k_ome_comment), (1, k_png_text), (1, k_jpeg_comment))


def _choose(rng, table):
    weights = np.array([w for w, _ in table], dtype=float)
    return table[int(rng.choice(len(table), p=weights / weights.sum()))][1]


def make_case(ctx: Context, rng: np.random.Generator) -> Case:
    """One mutated image: 1-3 mutations, or (in 12 % of cases) one meaning-keeping one."""
    base = mutate.pick(rng, ctx.bases)
    data = base.data
    keeping = rng.random() < 0.12
    labels = []
    count = 1 if keeping else int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1]))
    for _ in range(count):
        for _attempt in range(8):  # a mutator that finds nothing to change: another one
            new, label = _choose(rng, KEEPING if keeping else MUTATORS)(ctx, base, data, rng)
            if not label.endswith(":none"):
                break
        data = new
        labels.append(label)
    name = f"image{base.suffix}" if rng.random() < 0.9 else "image.dat"
    given = GIVEN_SIZE if keeping else None  # (some bases have no calibration of their own)
    if not keeping and rng.random() < 0.7:
        given = GIVEN_SIZE if rng.random() < 0.8 else float(mutate.pick(rng, (0.25, 2.0, 1e-3)))
    return Case(
        files={name: data},
        target=name,
        base=base.name,
        mutations=labels,
        preserving=keeping and not labels[0].endswith(":none"),
        extra={"given": given, "series": 0 if keeping or rng.random() < 0.95 else 1},
    )


# --------------------------------------------------------------------------------------------------
# checks


def _fail(message: str):
    raise CheckFailed("wrong_read", message)


def _block_means(level: np.ndarray, k: int) -> np.ndarray:
    """Means of ``k × k`` blocks (partial blocks at the edges average what they have)."""
    h, w, _ = level.shape
    rows, cols = np.arange(0, h, k), np.arange(0, w, k)
    sums = np.add.reduceat(np.add.reduceat(level.astype(np.float64), rows, axis=0), cols, axis=1)
    counts = np.minimum(k, h - rows)[:, None] * np.minimum(k, w - cols)[None, :]
    return sums / counts[..., None]


def _rounded(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _check_downsample(arr, size, img, levels, exact: int) -> None:
    """``arr`` must be the ``k × k`` block means of one of the levels, its pixel ``k`` times the
    level's, so it covers the extent and reaches less than one of its pixels past it."""
    h, w = img.shape
    if arr.ndim != 3 or arr.shape[2] != img.n_channels or arr.dtype != img.dtype:
        _fail(f"downsampled array {arr.shape} {arr.dtype}")
    for axis, (step, n, extent) in enumerate(
        zip(size, (arr.shape[1], arr.shape[0]), img.extent_um, strict=True)
    ):
        if not (extent * (1 - 1e-12) <= step * n < (extent + step) * (1 + 1e-12)):
            _fail(f"downsampled pixel size {size}: {n} pixels miss axis {axis} ({extent} µm)")
    for level in levels[:exact]:
        lh, lw = level.shape[:2]
        level_size = (img.pixel_size_um[0] * w / lw, img.pixel_size_um[1] * h / lh)
        for k in range(1, max(lh, lw) + 1):  # every k giving this shape (5 and 4 both give 4 of 16)
            if (-(-lh // k), -(-lw // k)) != arr.shape[:2]:
                continue
            if not np.allclose(size, (k * level_size[0], k * level_size[1]), rtol=1e-12):
                continue
            corner = _rounded(_block_means(level[:k, :k], k), img.dtype)  # a cheap first test
            if img.dtype.kind != "f" and not np.array_equal(arr[:1, :1], corner):
                continue
            want = _rounded(_block_means(level, k), img.dtype) if k > 1 else level
            if np.array_equal(arr, want):
                return
            if img.dtype.kind == "f" and np.allclose(arr, want, equal_nan=True):
                return
    if exact and exact == len(levels):
        _fail(f"downsampled {arr.shape} is no block mean of any level")


def _check_geometry(img, case: Case) -> None:
    shapes = img.level_shapes
    if not shapes or any(h < 1 or w < 1 for h, w in shapes) or img.shape != shapes[0]:
        _fail(f"level shapes {shapes}")
    if img.n_channels < 1:
        _fail(f"{img.n_channels} channels")
    sx, sy = img.pixel_size_um
    if not (math.isfinite(sx) and math.isfinite(sy) and sx > 0 and sy > 0):
        _fail(f"pixel size {img.pixel_size_um}")
    if not all(math.isfinite(v) and v > 0 for v in img.extent_um):
        _fail(f"extent {img.extent_um} µm")
    for level in range(img.n_levels):
        if not all(math.isfinite(v) and v > 0 for v in img.level_pixel_size_um(level)):
            _fail(f"level {level} pixel size {img.level_pixel_size_um(level)}")
    given = case.extra["given"]
    if given is not None:
        pair = given if isinstance(given, tuple) else (given, given)
        if img.pixel_size_um != pair or img.pixel_size_source != "argument":
            _fail(f"pixel_size_um={given} read as {img.pixel_size_um} ({img.pixel_size_source})")
    elif img.pixel_size_source == "argument":
        _fail("no pixel size was given, yet its source is 'argument'")
    point = np.array([[3.0, 5.0]])
    back = img.um_to_px(img.px_to_um(point))
    if not np.allclose(back, point, rtol=1e-9, atol=1e-9):
        _fail(f"px_to_um / um_to_px round trip gives {back}")


def _check_reads(img, meaning, case: Case, rng) -> None:
    nbytes = [h * w * img.n_channels * img.dtype.itemsize for h, w in img.level_shapes]
    levels = []
    for level, size in enumerate(nbytes):
        if size > MAX_READ_BYTES:
            break
        arr = img.read(level)
        if arr.shape != (*img.level_shapes[level], img.n_channels) or arr.dtype != img.dtype:
            _fail(f"level {level} read as {arr.shape} {arr.dtype}")
        levels.append(arr)
    exact = 0
    if isinstance(meaning, ref.Decoded):
        exact = min(len(meaning.levels), len(levels))
        if meaning.n_levels is not None and meaning.n_levels != img.n_levels:
            _fail(f"{img.n_levels} levels read, the file holds {meaning.n_levels}")
        for level in range(exact):
            want, got = meaning.levels[level], levels[level]
            if got.shape != want.shape or not np.array_equal(got, want.astype(got.dtype)):
                where = "" if got.shape != want.shape else f" at {np.argwhere(got != want)[0]}"
                _fail(f"level {level}: {got.shape} {got.dtype} differs from the file's{where}")
    h, w = img.shape
    y0, x0 = int(rng.integers(h)), int(rng.integers(w))
    rh, rw = int(rng.integers(1, min(h - y0, 40) + 1)), int(rng.integers(1, min(w - x0, 40) + 1))
    region = img.read_region(x0, y0, rw, rh)
    if region.shape != (rh, rw, img.n_channels):
        _fail(f"region read as {region.shape}")
    if levels and not np.array_equal(region, levels[0][y0 : y0 + rh, x0 : x0 + rw]):
        _fail(f"region at ({x0}, {y0}) differs from the level it comes from")
    for kwargs in ({"max_size": int(rng.integers(1, 80))}, {"factor": float(rng.uniform(1, 6))}):
        arr, size = img.downsampled(**kwargs)
        _check_downsample(arr, size, img, levels, exact if exact else 0)


def _check_preserved(img, base: Base, case: Case) -> None:
    want = base.reads
    got_levels = [img.read(i) for i in range(img.n_levels)]
    same = (
        img.level_shapes == want["level_shapes"]
        and img.n_channels == want["n_channels"]
        and img.dtype == want["dtype"]
        and img.file_pixel_size_um == want["file_pixel_size_um"]
        and img.file_pixel_size_source == want["file_pixel_size_source"]
        and all(np.array_equal(a, b) for a, b in zip(got_levels, want["levels"], strict=True))
    )
    if not same:
        _fail(f"a meaning-keeping mutation changed the read ({case.mutations})")


def exercise(ctx: Context, case: Case, target: Path, rng: np.random.Generator) -> str:
    """Open ``target``, read every level, a region and downsampled copies; check them."""
    from spatialfuse.errors import SpatialfuseError
    from spatialfuse.io.histology import describe_histology, read_histology

    base = ctx.by_name[case.base]
    meaning = base.meaning if case.preserving else ref.decode(target)
    try:
        img = read_histology(target, pixel_size_um=case.extra["given"], series=case.extra["series"])
        describe_histology(img)
        repr(img)
        _check_geometry(img, case)
        if case.preserving:
            _check_preserved(img, base, case)
        _check_reads(img, meaning, case, rng)
    except SpatialfuseError:
        if isinstance(meaning, ref.Decoded) and case.extra["series"] == 0:
            case.extra["note"] = "error where the reference decodes"
        raise
    return "read" if isinstance(meaning, ref.Decoded) else "read_unverified"
