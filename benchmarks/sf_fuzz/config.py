"""Fuzz cases for the run-config reader (:func:`spatialfuse.workflow._config.load_config`).

Bases are the annotated example config and a few small valid configs. A case mutates the YAML text
(truncation, bit flips, syntax characters, deep nesting, alias bombs, tags, duplicate keys, odd
encodings) or the parsed tree (keys removed, added or renamed, values replaced by values of every
YAML type, dangling references) and loads the result. A config that loads must be internally
consistent (finite numbers, known references, absolute paths, re-validating to itself); mutations
that keep the meaning (comments, key order, flow style, quoting) must load to the same config.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sf_fuzz import mutate
from sf_fuzz.runner import Case, CheckFailed

_MINIMAL = """\
modalities:
  msi: {kind: imzml, path: msi.imzML, pixel_size_um: 20}
"""
_TWO = """\
output: out
modalities:
  msi:
    kind: imzml
    path: data/msi.imzML
  vis:
    kind: visium
    path: data/visium
registrations:
  - {moving: msi, fixed: vis, model: similarity, landmarks: marks.csv}
mapping: {method: radius, aggregate: sum, min_coverage: 0.25}
clustering: {method: concat, resolution: 0.5, spatial_smoothing: 0.3, seed: 7}
correlation: {method: spearman, n_top: 5, n_permutations: 19}
outputs: {h5mu: false, spaceranger_like: true}
"""
_ODD_VALUES = (
    None,
    True,
    False,
    0,
    -1,
    1,
    2**63,
    10**30,
    1.5,
    -0.0,
    1e308,
    float("inf"),
    float("-inf"),
    float("nan"),
    "",
    " ",
    "imzml",
    "visium",
    "histology",
    "x" * 5000,
    "~/data",
    "../../../etc",
    "/abs/path",
    "a\x00b",
    "\u00b5m",
    [],
    [1, 2],
    {},
    {"kind": "imzml"},
    {"a": {"b": {"c": 1}}},
)
_TAGS = (
    "!!python/object/apply:os.system ['echo owned']",
    "!!python/name:os.system",
    "!!binary aGVsbG8=",
    "!!timestamp 2001-12-14t21:59:43.10-05:00",
    "!!set {a, b}",
    "!!omap [{a: 1}]",
    "!!float '1e400'",
    "!!int '0x7fffffffffffffffff'",
    "!unknown tag",
    "!!str 12",
)


@dataclass
class Base:
    name: str
    text: str
    data: dict
    meaning: dict  # load_config's result, paths relative to the config's folder


@dataclass
class Context:
    bases: list[Base]
    by_name: dict[str, Base]


def _meaning(config, folder: Path) -> dict:
    """A config as plain data, its paths made relative to ``folder`` (cases live elsewhere)."""

    def relative(value):
        if isinstance(value, Path):
            try:
                return ("path", str(value.relative_to(folder)))
            except ValueError:
                return ("path", str(value))
        if isinstance(value, dict):
            return {k: relative(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [relative(v) for v in value]
        if isinstance(value, float) and math.isnan(value):
            return "nan"
        return value

    return relative(config.model_dump())


def setup(workdir: Path) -> Context:
    import yaml

    from spatialfuse.workflow._config import EXAMPLE_CONFIG, load_config

    bases = []
    folder = workdir / "bases"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("example", EXAMPLE_CONFIG), ("minimal", _MINIMAL), ("two", _TWO)):
        path = folder / "config.yaml"
        path.write_text(text, encoding="utf-8")
        meaning = _meaning(load_config(path), folder)
        bases.append(Base(name, text, yaml.safe_load(text), meaning))
    return Context(bases, {b.name: b for b in bases})


def describe_bases(ctx: Context) -> list[str]:
    return [b.name for b in ctx.bases]


def base_reads(ctx: Context, name: str) -> bool:
    return True


# --------------------------------------------------------------------------------------------------
# mutators: (ctx, base, text bytes, rng) -> (text bytes, label)


def _paths_in(data, prefix=()):
    """Every key path into nested dicts and lists."""
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths_in(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _paths_in(value, (*prefix, i))


def _dump(data, rng) -> bytes:
    import yaml

    if rng.random() < 0.2:
        return json.dumps(data, allow_nan=True, default=str).encode()
    return yaml.safe_dump(data, sort_keys=bool(rng.random() < 0.5), allow_unicode=True).encode()


def _tree_edit(ctx, base, text, rng):
    import copy

    data = copy.deepcopy(base.data)
    paths = [p for p in _paths_in(data) if p]
    path = mutate.pick(rng, paths)
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    variant = int(rng.integers(5))
    if variant == 0:
        del parent[last]
        label = "tree:remove"
    elif variant == 1:
        value = _ODD_VALUES[int(rng.integers(len(_ODD_VALUES)))]
        parent[last] = value
        label = "tree:value"
    elif variant == 2 and isinstance(parent, dict):
        parent[mutate.pick(rng, ("unknown", "Kind", "path ", "", "modalities", 1))] = 1
        label = "tree:add_key"
    elif variant == 3 and isinstance(parent, dict):
        parent[mutate.pick(rng, ("msi", "vis", "he", "x" * 300, "42"))] = parent.pop(last)
        label = "tree:rename"
    else:  # point a reference somewhere else
        names = [*data.get("modalities", {}), "nope", ""]
        parent[last] = mutate.pick(rng, names)
        label = "tree:reference"
    return _dump(data, rng), label


def _truncate(ctx, base, text, rng):
    return mutate.truncate(text, rng), "truncate"


def _flip(ctx, base, text, rng):
    return mutate.flip_bits(text, rng), "flip_bits"


def _special(ctx, base, text, rng):
    return mutate.set_special_bytes(text, rng), "special_bytes"


def _cut_repeat(ctx, base, text, rng):
    if rng.random() < 0.5:
        return mutate.delete_range(text, rng, 64), "delete_range"
    return mutate.duplicate_range(text, rng, 128), "duplicate_range"


def _splice(ctx, base, text, rng):
    return mutate.splice(text, mutate.pick(rng, ctx.bases).text.encode(), rng), "splice"


def _deep(ctx, base, text, rng):
    depth = int(mutate.pick(rng, (50, 500, 990, 5000, 100_000)))
    key = mutate.pick(rng, (b"modalities", b"mapping", b"registrations", b"output", b"extra"))
    style = int(rng.integers(3))
    if style == 0:
        nest = mutate.deep_nesting(depth, b"[", b"]")
    elif style == 1:
        nest = b"{a: " * depth + b"1" + b"}" * depth
    else:
        depth = min(depth, 2_000)  # indentation grows with depth: 2,000 levels are 4 MB
        lines = b"".join(b"  " * (i + 1) + b"k%d:\n" % i for i in range(depth))
        return text + b"\n" + key + b":\n" + lines, "deep_nesting:block"
    return (
        text + b"\n" + key + b": " + nest + b"\n",
        f"deep_nesting:{'flow_list' if style == 0 else 'flow_map'}",
    )


def _bomb(ctx, base, text, rng):
    lines = [b'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(b"a%d: &a%d [" % (i, i) + b", ".join([b"*a%d" % (i - 1)] * 9) + b"]")
    target = mutate.pick(
        rng,
        (
            b"registrations: *a9",
            b"modalities: {m: {kind: imzml, path: *a9}}",
            b"extra: *a9",
            b"output: *a9",
        ),
    )
    return b"\n".join(lines) + b"\n" + text.replace(b"modalities:", b"unused_modalities:", 1) + (
        b"\n" + target + b"\n"
    ), "alias_bomb"


def _recursive(ctx, base, text, rng):
    return text + b"\nextra: &r [1, *r]\n", "recursive_alias"


def _tag(ctx, base, text, rng):
    lines = text.split(b"\n")
    candidates = [
        i for i, line in enumerate(lines) if b": " in line and not line.lstrip().startswith(b"#")
    ]
    if not candidates:
        return text, "tag:none"
    i = mutate.pick(rng, candidates)
    head = lines[i][: lines[i].index(b": ") + 2]
    lines[i] = head + mutate.pick(rng, _TAGS).encode()
    return b"\n".join(lines), "tag"


def _duplicate_key(ctx, base, text, rng):
    lines = text.split(b"\n")
    candidates = [
        i
        for i, line in enumerate(lines)
        if b": " in line
        and not line.lstrip().startswith((b"#", b"-"))
        and not line.startswith(b" ")
    ]
    if not candidates:
        return text, "duplicate_key:none"
    i = mutate.pick(rng, candidates)
    copy = lines[i]
    if rng.random() < 0.5:
        key = copy[: copy.index(b":")]
        copy = key + b": " + mutate.odd_number(rng).encode()
    lines.insert(len(lines), copy)
    return b"\n".join(lines), "duplicate_key"


def _number(ctx, base, text, rng):
    import re

    pattern = re.compile(rb":\s+(-?[0-9][0-9.]*)\s*(?:#|$)", re.M)
    new = mutate.pick(rng, (".inf", "-.inf", ".nan", "1.0e+400", "-0.0", "1e400", "0x10", "0o17"))
    out = mutate.replace_match(
        text, pattern, rng, lambda old: new if rng.random() < 0.6 else mutate.odd_number(rng)
    )
    return out, "number"


def _encoding(ctx, base, text, rng):
    variant = int(rng.integers(4))
    if variant == 0:
        return text.decode("latin-1").encode("utf-16"), "encoding:utf16"
    if variant == 1:
        return text.replace(b"path: ", b"path: \xb5\xff", 1), "encoding:latin1_bytes"
    if variant == 2:
        return text.replace(b"\n", b"\x00\n", 1), "encoding:nul"
    return b"\xef\xbb\xbf" + text, "encoding:bom"


def _path_value(ctx, base, text, rng):
    import re

    value = mutate.pick(
        rng,
        (
            "''",
            '"a\\0b"',
            "'" + "p/" * 3000 + "'",
            "~",
            "/",
            "'   '",
            "'..'",
            "[a, b]",
            "{a: 1}",
            "null",
        ),
    )
    out = mutate.replace_match(text, re.compile(rb"path:[ \t]+([^\n#]+)"), rng, lambda old: value)
    return out, "path_value"


def _keep_comments(ctx, base, text, rng):
    lines = text.split(b"\n")
    out = []
    for line in lines:
        out.append(line)
        if rng.random() < 0.3:
            out.append(b"# " + mutate.pick(rng, (b"note", b"key: value", b"- [", b"&a *a")))
    text = b"\n".join(out)
    if not text.startswith(b"---"):  # document markers, once
        text = b"---\n" + text + b"\n...\n"
    return text, "keep:comments"


def _keep_restyle(ctx, base, text, rng):
    import yaml

    if rng.random() < 0.5:
        return json.dumps(base.data, indent=int(rng.integers(0, 4))).encode(), "keep:flow_json"
    return yaml.safe_dump(
        base.data, sort_keys=True, default_flow_style=bool(rng.random() < 0.5), indent=4
    ).encode(), "keep:restyle"


def _keep_crlf(ctx, base, text, rng):
    return text.replace(b"\n", b"\r\n"), "keep:crlf"


MUTATORS = (
    (4, _tree_edit),
    (1, _truncate),
    (2, _flip),
    (1, _special),
    (1, _cut_repeat),
    (0.5, _splice),
    (1.5, _deep),
    (0.5, _bomb),
    (0.3, _recursive),
    (1, _tag),
    (1, _duplicate_key),
    (1, _number),
    (0.5, _encoding),
    (1, _path_value),
)
KEEPING = ((1, _keep_comments), (1, _keep_restyle), (0.5, _keep_crlf))


def _choose(rng, table):
    weights = np.array([w for w, _ in table], dtype=float)
    return table[int(rng.choice(len(table), p=weights / weights.sum()))][1]


def make_case(ctx: Context, rng: np.random.Generator) -> Case:
    base = mutate.pick(rng, ctx.bases)
    text = base.text.encode()
    keeping = rng.random() < 0.15
    labels = []
    for _ in range(int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1]))):
        text, label = _choose(rng, KEEPING if keeping else MUTATORS)(ctx, base, text, rng)
        labels.append(label)
    return Case(
        files={"config.yaml": text},
        target="config.yaml",
        base=base.name,
        mutations=labels,
        preserving=keeping,
    )


# --------------------------------------------------------------------------------------------------
# exercising and checking


def _fail(message: str):
    raise CheckFailed("wrong_read", message)


def _floats(value):
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _floats(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _floats(v)


def exercise(ctx: Context, case: Case, target: Path, rng: np.random.Generator) -> str:
    from spatialfuse.workflow._config import RunConfig, load_config

    config = load_config(target)
    if not isinstance(config, RunConfig):
        _fail(f"load_config returned {type(config).__name__}")
    if not config.modalities:
        _fail("a config without modalities loaded")
    dumped = config.model_dump()
    if not all(math.isfinite(v) for v in _floats(dumped)):
        _fail(f"a config with a non-finite number loaded: {list(_floats(dumped))}")
    names = set(config.modalities)
    for reg in config.registrations:
        if reg.moving not in names or reg.fixed not in names or reg.moving == reg.fixed:
            _fail(f"registration {reg.name} does not join two modalities")
    for path in [config.output, *(m.path for m in config.modalities.values())]:
        if not path.is_absolute():
            _fail(f"path {path} was not resolved")
    for name in (config.msi_name, config.visium_name):
        if name is not None and name not in names:
            _fail(f"mapping names {name!r}, not a modality")
    if RunConfig.model_validate(dumped) != config:
        _fail("the loaded config does not validate to itself")
    if case.preserving:
        got = _meaning(config, target.parent)
        if got != ctx.by_name[case.base].meaning:
            _fail(f"a meaning-keeping mutation changed the config: {got} vs the base's")
    return "read"
