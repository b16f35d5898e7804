"""The pipeline attacks (:mod:`sf_fuzz.pipeline`), one generator per class of issue 14.

Each generator returns :class:`~sf_fuzz.pipeline.Attack` objects whose ``build`` makes a case's
files in a fresh folder and returns its :class:`~sf_fuzz.pipeline.Plan`. ``rng`` draws the random
parts (names, damaged bytes, kill delays); the same seed gives the same cases.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import zlib
from functools import partial
from pathlib import Path

from sf_fuzz.pipeline import (
    Attack,
    Plan,
    Workspace,
    pair_config,
    trio_config,
    write_config,
)

#: Hostile name pieces: bytes that are not UTF-8, mathtext, HTML, spaces, quotes.
NAME_PIECES = [
    os.fsdecode(b"caf\xe9 \xff"),
    "$\\alpha^2$",
    "<b>x</b>&amp;",
    "two  spaces",
    "quote'\"",
    "ünï ¢ødé",
    "a" * 120,
]

USER_FILES = {
    "README.md": b"my notes\n",
    "data.csv": b"a,b\n1,2\n",
    ".gitlab-ci.yml": b"stages: [test]\n",
    ".env.local": b"SECRET=1\n",
    ".pre-commit-config.yaml": b"repos: []\n",
    "._msi.imzML": b"\x00\x05\x16\x07",
    ".git/config": b"[core]\n",
    ".git/HEAD": b"ref: refs/heads/main\n",
    ".git/objects/ab/cdef.pack.idx": b"\x00" * 32,
}


def _put_user_files(folder: Path) -> None:
    for rel, data in USER_FILES.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _copy_pair(ws: Workspace, folder: Path, msi_name: str = "msi", he_name: str = "he") -> tuple:
    """Copy the MSI pair and the H&E into ``folder`` under the given names."""
    folder.mkdir(parents=True, exist_ok=True)
    msi = folder / f"{msi_name}.imzML"
    shutil.copyfile(ws.trio.msi, msi)
    shutil.copyfile(ws.trio.msi.with_suffix(".ibd"), folder / f"{msi_name}.ibd")
    he = folder / f"{he_name}.ome.tif"
    shutil.copyfile(ws.trio.he, he)
    return msi, he


# -- paths and names ---------------------------------------------------------------------------


def _names_case(ws: Workspace, root: Path, *, folder: str, file: str, modality: str) -> Plan:
    project = root / folder
    msi, he = _copy_pair(ws, project, file, file + "_he")
    data = pair_config(msi.name, he.name, "results")
    if modality:
        data["modalities"] = {modality: data["modalities"]["msi"], "he": data["modalities"]["he"]}
        data["registrations"][0]["moving"] = modality
    # The config sits in the project folder: its relative paths carry any byte, YAML need not.
    config = write_config(project / "config.yaml", data)
    return Plan(config=config, out=project / "results", root=root)


def _collision_check(out: Path, summary: dict) -> str | None:
    paths = [p for k, p in summary.get("files", {}).items() if k.startswith("transform")]
    if len(set(paths)) != len(paths):
        return "two modalities wrote the same transform file"
    return None


def _collision_case(ws: Workspace, root: Path) -> Plan:
    msi, he = _copy_pair(ws, root / "p")
    data = pair_config(msi.name, he.name, "results")
    data["modalities"] = {
        "msi": data["modalities"]["msi"],
        "H&E": {"kind": "histology", "path": he.name},
        "H_E": {"kind": "histology", "path": he.name},
    }
    data["registrations"] = [
        {"moving": "msi", "fixed": "H&E", "model": "affine"},
        {"moving": "msi", "fixed": "H_E", "model": "affine"},
    ]
    config = write_config(root / "p" / "config.yaml", data)
    return Plan(
        config=config, out=root / "p" / "results", root=root, expect="any", check=_collision_check
    )


def names(rng: random.Random, n_random: int = 0) -> list[Attack]:
    """Odd bytes, long names, spaces, ``$…$``, HTML in folder, file and modality names."""
    fixed = [
        ("non-UTF-8 folder", dict(folder=NAME_PIECES[0], file="msi", modality="")),
        ("mathtext + spaces", dict(folder="a $x$ b", file="m $\\beta$ i", modality="$x^2$")),
        ("HTML names", dict(folder="<i>p&lt;", file="<b>m&amp;", modality="<script>x</script>")),
        ("long names", dict(folder="d" * 200, file="f" * 200, modality="m" * 150)),
        ("non-UTF-8 file", dict(folder="p", file=os.fsdecode(b"ms\xffi"), modality="ünï")),
    ]
    attacks = [Attack("names", name, partial(_names_case, **kw)) for name, kw in fixed]
    attacks.append(Attack("names", "names colliding after sanitising", _collision_case))
    for i in range(n_random):
        pieces = [rng.choice(NAME_PIECES)[:60] for _ in range(3)]
        kw = dict(folder=pieces[0], file=pieces[1].replace("/", "_"), modality=pieces[2])
        attacks.append(Attack("names", f"random names {i}", partial(_names_case, **kw)))
    return attacks


# -- output folders ----------------------------------------------------------------------------


def _output_case(ws: Workspace, root: Path, *, where: str, force: bool = False) -> Plan:
    project = root / "project"
    msi, he = _copy_pair(ws, project / "data")
    _put_user_files(project)
    out = {
        "user files": project / "results",
        "input folder": project / "data",
        "inside input folder": project / "data" / "results",
        "parent of inputs": project,
        "config folder (.)": project,
        "a regular file": project / "data.csv",
        "symlink to inputs": project / "link",
        "previous run + dot-files": project / "results",
    }[where]
    tool_owned: set[str] = set()
    if where == "user files":
        out.mkdir()
        _put_user_files(out)
    elif where == "symlink to inputs":
        out.symlink_to(project / "data")
    elif where == "previous run + dot-files":
        tool_owned = ws.warm_copy("pair", out)
        _put_user_files(out)
    rel = os.path.relpath(out, project) if where != "config folder (.)" else "."
    data = pair_config(os.path.relpath(msi, project), os.path.relpath(he, project), rel)
    config = write_config(project / "config.yaml", data)
    args = ("--force",) if force else ()
    # Previous-run folders hold a valid cache of other input paths: any finished run is judged.
    return Plan(config=config, out=out, root=root, expect="any", args=args, tool_owned=tool_owned)


def output_folders(rng: random.Random) -> list[Attack]:
    """Output folders holding user files, equal to or inside or around an input, ``.git``."""
    wheres = [
        "user files",
        "input folder",
        "inside input folder",
        "parent of inputs",
        "config folder (.)",
        "a regular file",
        "symlink to inputs",
        "previous run + dot-files",
    ]
    attacks = [Attack("output", w, partial(_output_case, where=w)) for w in wheres]
    for w in ("user files", "parent of inputs", "input folder", "symlink to inputs"):
        attacks.append(Attack("output", w + " --force", partial(_output_case, where=w, force=True)))
    return attacks


# -- cache state -------------------------------------------------------------------------------


def _damage(path: Path, how: str, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garble":
        at = rng.randrange(max(1, len(data) - 64))
        data[at : at + 64] = bytes(rng.randrange(256) for _ in range(64))
        path.write_bytes(bytes(data))
    elif how == "bitflip":
        at = rng.randrange(len(data))
        data[at] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
    elif how == "directory":
        path.unlink()
        path.mkdir()
        (path / "x").write_bytes(b"x")
    else:
        raise ValueError(how)


def _cache_case(ws: Workspace, root: Path, *, kind: str, how: str, pick: int, seed: int) -> Plan:
    out = root / "results"
    tool_owned = ws.warm_copy(kind, out)
    entries = sorted(p for p in (out / ".cache").iterdir() if p.is_file())
    target = entries[pick % len(entries)]
    _damage(target, how, random.Random(seed))
    t = ws.trio
    if kind == "pair":
        data = pair_config(str(t.msi), str(t.he), str(out))
    else:
        data = trio_config(str(t.msi), str(t.he), str(t.visium), str(out))
    config = write_config(root / "config.yaml", data)
    return Plan(config=config, out=out, root=root, reference=kind, tool_owned=tool_owned)


def cache_state(rng: random.Random, n: int, kinds=("pair", "trio")) -> list[Attack]:
    """Truncated, emptied, garbled, bit-flipped cache entries (or seals): a clean run's result."""
    hows = ["truncate", "empty", "garble", "bitflip", "directory"]
    attacks = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        how = hows[i % len(hows)] if i < len(hows) else rng.choice(hows)
        pick = rng.randrange(1000)
        build = partial(_cache_case, kind=kind, how=how, pick=pick, seed=rng.randrange(2**32))
        attacks.append(Attack("cache", f"{kind}: {how} entry #{pick}", build))
    return attacks


# -- kills -------------------------------------------------------------------------------------


def _kill_case(ws: Workspace, root: Path, *, kind: str, delay: float) -> Plan:
    _put_user_files(root)
    out = root / "results"
    tool_owned: set[str] = set()
    t = ws.trio
    if kind == "pair":
        data = pair_config(str(t.msi), str(t.he), str(out))
    else:  # from a finished run: the kill lands in mapping, exports or the report
        tool_owned = ws.warm_copy(kind, out)
        data = trio_config(str(t.msi), str(t.he), str(t.visium), str(out))
        data["clustering"] = {"method": "wnn", "seed": 0, "resolution": 0.8}
    config = write_config(root / "config.yaml", data)
    reference = kind if kind == "pair" else None
    expect = "same" if reference else "any"
    return Plan(
        config=config,
        out=out,
        root=root,
        kill_after=delay,
        reference=reference,
        expect=expect,
        tool_owned=tool_owned,
    )


def kills(rng: random.Random, n: int, kinds=("pair", "trio")) -> list[Attack]:
    """SIGKILL after a random delay, then the same run again."""
    attacks = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        delay = round(rng.uniform(0.5, 7.0) if kind == "pair" else rng.uniform(2.0, 14.0), 2)
        build = partial(_kill_case, kind=kind, delay=delay)
        attacks.append(Attack("kill", f"{kind}: SIGKILL after {delay} s", build))
    return attacks


# -- cross-file consistency --------------------------------------------------------------------


def _positions(folder: Path) -> Path:
    return next((folder / "spatial").glob("tissue_positions*"))


def _mutate_visium(folder: Path, how: str, rng: random.Random) -> None:
    import pandas as pd

    pos_path = _positions(folder)
    header = 0 if pos_path.read_text(encoding="utf-8").startswith("barcode") else None
    pos = pd.read_csv(pos_path, header=header)
    cols = list(pos.columns)
    if how == "swapped pxl columns":
        pos[[cols[4], cols[5]]] = pos[[cols[5], cols[4]]].to_numpy()
    elif how == "permuted barcodes":
        pos[cols[0]] = pos[cols[0]].sample(frac=1.0, random_state=rng.randrange(2**31)).to_numpy()
    elif how == "hires scale doubled":
        sf_path = folder / "spatial" / "scalefactors_json.json"
        scale = json.loads(sf_path.read_text(encoding="utf-8"))
        scale["tissue_hires_scalef"] *= 2
        sf_path.write_text(json.dumps(scale), encoding="utf-8")
        return
    else:
        raise ValueError(how)
    pos.to_csv(pos_path, index=False, header=header is not None)


def _consistency_case(ws: Workspace, root: Path, *, how: str, seed: int) -> Plan:
    out = root / "results"
    tool_owned = ws.warm_copy("trio", out)
    visium = root / "visium"
    if how == "other tissue":
        shutil.copytree(ws.other_visium(), visium)
    else:
        shutil.copytree(ws.trio.visium, visium)
        _mutate_visium(visium, how, random.Random(seed))
    t = ws.trio
    data = trio_config(str(t.msi), str(t.he), str(visium), str(out))
    config = write_config(root / "config.yaml", data)
    return Plan(config=config, out=out, root=root, expect="bad", tool_owned=tool_owned)


def _switched_off_case(ws: Workspace, root: Path) -> Plan:
    out = root / "results"
    tool_owned = ws.warm_copy("trio", out)
    t = ws.trio
    data = trio_config(str(t.msi), str(t.he), str(t.visium), str(out))
    data["outputs"] = {"spatialdata": False, "report": False}
    config = write_config(root / "config.yaml", data)
    return Plan(config=config, out=out, root=root, expect="any", tool_owned=tool_owned)


def consistency(rng: random.Random) -> list[Attack]:
    """Visium folders whose files disagree, another tissue, outputs switched off."""
    attacks = [
        Attack("consistency", how, partial(_consistency_case, how=how, seed=rng.randrange(2**31)))
        for how in ("swapped pxl columns", "permuted barcodes", "hires scale doubled")
    ]
    attacks.append(
        Attack(
            "consistency", "other tissue", partial(_consistency_case, how="other tissue", seed=0)
        )
    )
    attacks.append(Attack("consistency", "report switched off (stale)", _switched_off_case))
    return attacks


# -- non-regular files -------------------------------------------------------------------------


def _fifo_case(ws: Workspace, root: Path, *, what: str) -> Plan:
    project = root / "p"
    msi, he = _copy_pair(ws, project)
    visium = project / "visium"
    shutil.copytree(ws.trio.visium, visium)
    special = {
        "H&E": he,
        "imzML": msi,
        ".ibd": msi.with_suffix(".ibd"),
        "Visium positions": _positions(visium),
        "Visium matrix": visium / "filtered_feature_bc_matrix.h5",
        "Visium scale factors": visium / "spatial" / "scalefactors_json.json",
        "config": project / "config.yaml",
    }
    data = trio_config(msi.name, he.name, "visium", "results")
    config = write_config(project / "config.yaml", data)
    if what == "H&E as /dev/zero":
        he.unlink()
        he.symlink_to("/dev/zero")
    elif what == "H&E as a folder":
        he.unlink()
        he.mkdir()
    elif what == "symlink loop as imzML":
        msi.unlink()
        msi.symlink_to(msi.name)
    else:
        target = special[what]
        target.unlink()
        os.mkfifo(target)
    return Plan(config=config, out=project / "results", root=root, expect="any", timeout=60)


def non_regular(rng: random.Random) -> list[Attack]:
    """FIFOs, devices, folders and symlink loops as inputs: refused, never waited on."""
    whats = [
        "H&E",
        "imzML",
        ".ibd",
        "Visium positions",
        "Visium matrix",
        "Visium scale factors",
        "config",
        "H&E as /dev/zero",
        "H&E as a folder",
        "symlink loop as imzML",
    ]
    return [Attack("nonregular", f"FIFO/special: {w}", partial(_fifo_case, what=w)) for w in whats]


# -- resource limits ---------------------------------------------------------------------------


def _png(path: Path, width: int, height: int) -> None:
    """A valid 1-bit grey PNG of one colour: tiny on disk, ``width × height`` decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    parts = [comp.compress(row * 1000) for _ in range(height // 1000)]
    parts.append(comp.compress(row * (height % 1000)))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )


def _limits_case(ws: Workspace, root: Path, *, what: str) -> Plan:
    project = root / "p"
    msi, he = _copy_pair(ws, project)
    data = pair_config(msi.name, he.name, "results")
    if what == "imzML pixel size labelled nm":
        text = msi.read_bytes().decode("latin-1")
        for acc in ("IMS:1000046", "IMS:1000047"):
            start = text.index(f'accession="{acc}"')
            end = text.index("/>", start)
            tag = text[start:end].replace("UO:0000017", "UO:0000018")
            text = text[:start] + tag.replace('"micrometer"', '"nanometer"') + text[end:]
        msi.write_bytes(text.encode("latin-1"))
        data["registrations"][0]["scale"] = "given"
    elif what == "70000 × 70000 PNG as H&E":
        png = project / "huge.png"
        _png(png, 70_000, 70_000)
        data["modalities"]["he"] = {"kind": "histology", "path": png.name, "pixel_size_um": 1.0}
    elif what == "Visium matrix declaring 1.5e8 barcodes":
        import h5py

        visium = project / "visium"
        shutil.copytree(ws.trio.visium, visium)
        with h5py.File(visium / "filtered_feature_bc_matrix.h5", "r+") as fh:
            shape = fh["matrix/shape"]
            shape[1] = 150_000_000
        data = trio_config(msi.name, he.name, "visium", "results")
    elif what == "config alias bomb":
        lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
        for i in range(1, 9):
            lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
        text = write_config(project / "config.yaml", data).read_text(encoding="utf-8")
        (project / "config.yaml").write_text(text + "\n".join(lines) + "\n", encoding="utf-8")
        return Plan(
            config=project / "config.yaml", out=project / "results", root=root, expect="any"
        )
    elif what == "3 MB config":
        text = write_config(project / "config.yaml", data).read_text(encoding="utf-8")
        padding = ("# " + "x" * 98 + "\n") * 30_000
        (project / "config.yaml").write_text(text + padding, encoding="utf-8")
        return Plan(
            config=project / "config.yaml", out=project / "results", root=root, expect="any"
        )
    elif what == "decoded-image limit of 1000 bytes":
        data["limits"] = {"max_decoded_image_bytes": 1000}
    else:
        raise ValueError(what)
    config = write_config(project / "config.yaml", data)
    return Plan(config=config, out=project / "results", root=root, expect="any", timeout=180)


def resource_limits(rng: random.Random) -> list[Attack]:
    """Huge declared or needed sizes: refused at once with a limit error."""
    whats = [
        "imzML pixel size labelled nm",
        "70000 × 70000 PNG as H&E",
        "Visium matrix declaring 1.5e8 barcodes",
        "config alias bomb",
        "3 MB config",
        "decoded-image limit of 1000 bytes",
    ]
    return [Attack("limits", w, partial(_limits_case, what=w)) for w in whats]


def all_attacks(seed: int, *, scale: int = 1) -> list[Attack]:
    """The full suite (``scale`` multiplies the random cases)."""
    rng = random.Random(seed)
    return [
        *names(rng, n_random=2 * scale),
        *output_folders(rng),
        *cache_state(rng, n=6 * scale),
        *kills(rng, n=6 * scale),
        *consistency(rng),
        *non_regular(rng),
        *resource_limits(rng),
    ]


def quick_attacks(seed: int = 2026) -> list[Attack]:
    """A deterministic slice for the tests: one or two cheap cases of each class."""
    rng = random.Random(seed)
    by_name = {a.name: a for a in names(rng)}
    outputs = {a.name: a for a in output_folders(rng)}
    fifo = {a.name: a for a in non_regular(rng)}
    limits = {a.name: a for a in resource_limits(rng)}
    return [
        by_name["non-UTF-8 folder"],
        outputs["user files --force"],
        outputs["input folder"],
        *cache_state(rng, n=1, kinds=("pair",)),
        *kills(random.Random(seed), n=1, kinds=("pair",)),
        fifo["FIFO/special: H&E"],
        limits["imzML pixel size labelled nm"],
    ]
