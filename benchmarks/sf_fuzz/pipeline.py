"""Pipeline-level attacks: ``spatialfuse run`` under hostile paths, folders, caches and kills.

The reader fuzzers (:mod:`sf_fuzz.runner`) damage file *contents*. This module attacks the layer
around the readers as a hostile user would (issue 14): each case builds a small project from one
synthetic trio (:func:`spatialfuse.datasets.synthetic_trio`), runs ``spatialfuse run`` in a
subprocess (optionally killing it), and classifies what happened:

``clean_error``
    a non-zero exit with a spatialfuse message (``Error: ...``) and no traceback;
``flagged``
    the run finished (exit 0 or 3) and a known-bad input shows in ``summary.json`` (a failed
    registration, a consistency check that is not ``ok``, a status other than ``ok``);
``ok``
    the run finished, its outputs are valid and match the clean run where the attack keeps the
    meaning;
``silent_wrong``
    exit 0 with a wrong or stale result: outputs differ from the clean run, a known-bad input
    not flagged, an output of an earlier run left unlisted, an invalid output file;
``crash``
    a traceback or an unexpected exit status;
``hang``
    the run passed its timeout;
``data_loss``
    a file the tool did not write (inputs, user files, dot-files) changed or vanished — every such
    file is hashed before and after.

The last four are failures. Cases are built by :mod:`sf_fuzz.pipeline_cases`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

#: Classes a case may end in, in the order the table prints them; the last four are failures.
OUTCOMES = ("clean_error", "flagged", "ok", "silent_wrong", "crash", "hang", "data_loss")
FAILURES = ("silent_wrong", "crash", "hang", "data_loss")
#: Files spatialfuse keeps in an output folder for itself (never compared, never user files).
TOOL_HIDDEN = (".cache", ".spatialfuse-journal", ".spatialfuse.lock")

#: The small trio every case starts from (one run of the MSI + H&E pair takes ~6 s cold).
TRIO_OPTIONS = {
    "seed": 1,
    "tissue_size_um": (800.0, 600.0),
    "he_pixel_size_um": 4.0,
    "n_ions": 40,
    "n_genes": 40,
}


def printable(path: os.PathLike | str) -> str:
    """A path as spatialfuse records it: bytes that are not UTF-8 as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def snapshot(root: Path, skip: Callable[[Path], bool] = lambda p: False) -> dict[str, str]:
    """SHA-256 of every regular file under ``root`` (symlinks and FIFOs by their kind)."""
    out: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = Path(folder) / name
            if skip(path):
                continue
            if path.is_symlink():
                out[os.fsencode(path).hex()] = "link:" + os.readlink(path)
            elif path.is_file():
                out[os.fsencode(path).hex()] = sha256(path)
            else:
                out[os.fsencode(path).hex()] = "special"
    return out


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def pair_config(msi: str, he: str, out: str, **changes) -> dict:
    """The MSI + H&E run: one registration, the report (~6 s cold, ~3 s cached)."""
    data = {
        "output": out,
        "modalities": {
            "msi": {"kind": "imzml", "path": msi},
            "he": {"kind": "histology", "path": he},
        },
        "registrations": [{"moving": "msi", "fixed": "he", "model": "affine"}],
    }
    data.update(changes)
    return data


def trio_config(msi: str, he: str, visium: str, out: str, **changes) -> dict:
    """The whole pipeline (~25 s cold, ~13 s cached): both registrations, mapping, exports."""
    data = {
        "output": out,
        "modalities": {
            "msi": {"kind": "imzml", "path": msi},
            "he_msi": {"kind": "histology", "path": he},
            "visium": {"kind": "visium", "path": visium},
        },
        "registrations": [
            {"moving": "msi", "fixed": "he_msi", "model": "affine"},
            {"moving": "he_msi", "fixed": "visium", "model": "affine"},
        ],
        "mapping": {"method": "area"},
        "clustering": {"method": "wnn", "seed": 0},
        "outputs": {"spatialdata": False},
    }
    data.update(changes)
    return data


@dataclass
class Plan:
    """What a case runs and how it is judged.

    ``root`` holds the case's files (hashed before and after, except ``tool_owned``); ``expect``
    is ``"same"`` (meaning kept: a finished run must match the clean ``reference``), ``"bad"``
    (a known-bad input: a finished run must flag it) or ``"any"`` (no reference: a finished run
    must only be valid).
    """

    config: Path | bytes
    out: Path
    root: Path
    expect: str = "same"
    reference: str | None = "pair"
    args: tuple[str, ...] = ()
    kill_after: float | None = None
    timeout: float = 120.0
    tool_owned: set[str] = field(default_factory=set)
    check: Callable[[Path, dict], str | None] | None = None


@dataclass
class Attack:
    """One case: its class, a name, and the function that builds its :class:`Plan`."""

    klass: str
    name: str
    build: Callable[[Workspace, Path], Plan]


@dataclass
class Outcome:
    klass: str
    name: str
    outcome: str
    seconds: float
    detail: str = ""
    notes: list[str] = field(default_factory=list)


class Workspace:
    """The base trio and the clean runs every case is compared against."""

    def __init__(self, folder: Path):
        import spatialfuse as sf

        self.folder = folder
        self.trio = sf.datasets.synthetic_trio(folder / "base", **TRIO_OPTIONS)
        self.base = folder / "base"
        self._references: dict[str, Path] = {}
        self._other_visium: Path | None = None
        self.base_hashes = snapshot(self.base)

    def reference(self, kind: str) -> Path:
        """The clean run's output folder (``"pair"`` or ``"trio"``), run once."""
        if kind not in self._references:
            out = self.folder / f"reference-{kind}"
            t = self.trio
            if kind == "pair":
                data = pair_config(str(t.msi), str(t.he), str(out))
            else:
                data = trio_config(str(t.msi), str(t.he), str(t.visium), str(out))
            config = write_config(self.folder / f"reference-{kind}.yaml", data)
            done = run_cli(config, self.folder, timeout=600)
            if done.returncode != 0:
                raise RuntimeError(f"the clean {kind} run failed:\n{done.stderr[-3000:]}")
            self._references[kind] = out
        return self._references[kind]

    def warm_copy(self, kind: str, out: Path) -> set[str]:
        """Copy the clean run's folder (its cache stays valid); return its files' keys."""
        shutil.copytree(self.reference(kind), out, symlinks=True)
        return set(snapshot(out))

    def other_visium(self) -> Path:
        """The Visium folder of another synthetic tissue."""
        if self._other_visium is None:
            import spatialfuse as sf

            other = sf.datasets.synthetic_trio(self.folder / "other", **{**TRIO_OPTIONS, "seed": 7})
            self._other_visium = other.visium
        return self._other_visium


@dataclass
class Done:
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    killed: bool = False


def run_cli(
    config: Path | bytes,
    cwd: Path,
    *,
    args: tuple[str, ...] = (),
    timeout: float = 120.0,
    kill_after: float | None = None,
) -> Done:
    """``spatialfuse run CONFIG --quiet`` in its own process group; SIGKILL it on a timeout."""
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    cmd = [os.fsencode(sys.executable), b"-m", b"spatialfuse", b"run", os.fsencode(config)]
    cmd += [os.fsencode(a) for a in (*args, "--quiet")]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    limit = timeout if kill_after is None else min(timeout, kill_after)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        seconds = time.perf_counter() - start
        text = (out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
        if kill_after is not None and kill_after < timeout:
            return Done(None, *text, seconds, killed=True)
        return Done(None, *text, seconds, timed_out=True)
    seconds = time.perf_counter() - start
    return Done(
        proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), seconds
    )


# -- judging ----------------------------------------------------------------------------------


def _is_tool_hidden(out: Path, path: Path) -> bool:
    try:
        first = path.relative_to(out).parts[0]
    except ValueError:
        return False
    return first in TOOL_HIDDEN


def _is_user(path: Path, user: set[str]) -> bool:
    """Whether ``path`` (or the file it reaches through symbolic links) was there before."""
    return os.fsencode(path).hex() in user or os.fsencode(os.path.realpath(path)).hex() in user


def invalid_file(path: Path) -> str | None:
    """Why an output file is not a complete file of its kind (None: it is)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            json.loads(path.read_bytes())
        elif suffix in (".h5ad", ".h5mu", ".h5"):
            import h5py

            with h5py.File(path, "r") as fh:
                if not list(fh.keys()):
                    return "an empty HDF5 file"
        elif suffix == ".png":
            from PIL import Image

            with Image.open(path) as im:
                im.load()
        elif suffix == ".html":
            if not path.read_bytes().rstrip().endswith(b"</html>"):
                return "HTML without its end"
        elif suffix == ".csv":
            import pandas as pd

            pd.read_csv(path)
    except Exception as exc:  # any failure to parse is the finding
        return f"{type(exc).__name__}: {exc}"
    return None


def output_problems(out: Path, user: set[str]) -> list[str]:
    """Invalid files under ``out`` (tool files only; ``user``: keys of files that were there)."""
    problems = []
    if not out.is_dir():
        return problems
    for folder, _dirs, files in os.walk(out):
        for name in files:
            path = Path(folder) / name
            if _is_tool_hidden(out, path) or _is_user(path, user):
                continue
            if ".zarr" in path.as_posix() or name.startswith("."):
                continue  # a hidden temporary of an atomic write is not an output
            why = invalid_file(path)
            if why:
                problems.append(f"{printable(path.relative_to(out))}: {why}")
    return problems


def _numbers(obj) -> list[float]:
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return []
    if isinstance(obj, int | float):
        return [float(obj)]
    if isinstance(obj, dict):
        return [x for key in sorted(obj) for x in _numbers(obj[key])]
    return [x for item in obj for x in _numbers(item)]


def _on_disk(out: Path, printed: str) -> Path | None:
    """The file under ``out`` that spatialfuse recorded as ``printed`` (``\\xNN`` escapes)."""
    if Path(printed).is_file():
        return Path(printed)
    for folder, _dirs, files in os.walk(out):
        for name in files:
            if printable(Path(folder) / name) == printed:
                return Path(folder) / name
    return None


def _transforms(out: Path, summary: dict) -> list[list[float]]:
    """The numbers of every registration's transform, in config order."""
    files = summary.get("files", {})
    found = []
    for reg in summary.get("registrations", []):
        key = f"transform {reg['moving']} → {reg['fixed']}"
        path = _on_disk(out, files[key]) if key in files else None
        if path is None:
            found.append([])
            continue
        found.append(_numbers(json.loads(path.read_text(encoding="utf-8"))))
    return found


def compare_with_reference(out: Path, summary: dict, reference: Path) -> str | None:
    """Why a run's results differ from the clean run's (None: they agree)."""
    ref = json.loads((reference / "summary.json").read_text(encoding="utf-8"))
    if summary.get("status") != ref.get("status"):
        return f"status {summary.get('status')!r}, the clean run's {ref.get('status')!r}"
    oks = [r.get("ok") for r in summary.get("registrations", [])]
    ref_oks = [r.get("ok") for r in ref.get("registrations", [])]
    if oks != ref_oks:
        return f"registration checks {oks}, the clean run's {ref_oks}"
    for mine, theirs in zip(_transforms(out, summary), _transforms(reference, ref), strict=False):
        if len(mine) != len(theirs) or not np.allclose(mine, theirs, rtol=1e-6, atol=1e-6):
            return "a transform differs from the clean run's"
    mine_csv = summary.get("files", {}).get("correlation")
    ref_csv = ref.get("files", {}).get("correlation")
    if bool(mine_csv) != bool(ref_csv):
        return "correlation.csv written in one run only"
    if mine_csv:
        import pandas as pd

        a, b = pd.read_csv(_on_disk(out, mine_csv)), pd.read_csv(ref_csv)
        if a.shape != b.shape or list(a.columns) != list(b.columns):
            return f"correlation.csv has shape {a.shape}, the clean run's {b.shape}"
        num = a.select_dtypes("number").columns
        if not np.allclose(a[num].to_numpy(), b[num].to_numpy(), rtol=1e-6, equal_nan=True):
            return "correlation.csv values differ from the clean run's"
    return None


def flags(summary: dict) -> list[str]:
    """What ``summary.json`` flags: a status, failed registrations, consistency checks."""
    found = []
    if summary.get("status") not in ("ok", None):
        found.append(f"status {summary['status']}")
    for reg in summary.get("registrations", []):
        if not reg.get("ok", True):
            found.append(f"registration {reg['moving']} → {reg['fixed']} failed its checks")
    for name, info in summary.get("inputs", {}).items():
        for check, result in (info.get("consistency_checks") or {}).items():
            if result.get("status") != "ok":
                found.append(f"{name}: {check} {result.get('status')}")
    return found


def stale_outputs(out: Path, summary: dict, user: set[str]) -> list[str]:
    """Files in ``out`` the run neither wrote nor found as user files: stale results."""
    listed = {printable(p) for p in summary.get("files", {}).values()}
    listed.add(printable(out / "summary.json"))
    stale = []
    for folder, dirs, files in os.walk(out):
        here = Path(folder)
        for d in list(dirs):
            if printable(here / d) in listed:
                dirs.remove(d)  # a listed folder (SpatialData, Space Ranger-like) is one output
        for name in files:
            path = here / name
            if _is_tool_hidden(out, path) or _is_user(path, user):
                continue
            if printable(path) not in listed:
                stale.append(printable(path.relative_to(out)))
    return stale


def leftovers(out: Path, user: set[str]) -> list[str]:
    """Hidden temporaries left in the output folder (not the tool's own files, not user files)."""
    found = []
    if not out.is_dir():
        return found
    for folder, dirs, files in os.walk(out):
        here = Path(folder)
        dirs[:] = [d for d in dirs if not _is_tool_hidden(out, here / d)]
        for name in files + dirs:
            path = here / name
            if name.startswith(".") and not _is_tool_hidden(out, path):
                if not _is_user(path, user) and not any(
                    k.startswith(os.fsencode(path).hex() + "2f") for k in user
                ):
                    found.append(printable(path.relative_to(out)))
    return found


def judge(ws: Workspace, plan: Plan, done: Done, user: set[str]) -> tuple[str, str, list[str]]:
    """The case's outcome class, why, and notes."""
    notes: list[str] = []
    if done.timed_out:
        return "hang", f"no exit after {plan.timeout:.0f} s", notes
    if "Traceback" in done.stderr or "Fatal Python error" in done.stderr:
        tail = done.stderr.strip().splitlines()[-1:] or [""]
        return "crash", f"traceback: {tail[0][:300]}", notes
    if done.returncode not in (0, 1, 2, 3):
        return "crash", f"exit status {done.returncode}: {done.stderr.strip()[-300:]}", notes
    summary_path = plan.out / "summary.json"
    if done.returncode in (1, 2) or (done.returncode == 3 and not summary_path.is_file()):
        message = done.stderr.strip().splitlines()
        first = next((line for line in message if line.startswith("Error")), None)
        if first is None:
            return "crash", f"exit {done.returncode} without an error message", notes
        if plan.expect == "same":
            notes.append("refused an input the clean run reads")
        return "clean_error", first[:300], notes
    # The run finished (0, or 3 with its summary): judge its outputs.
    problems = output_problems(plan.out, user)
    if problems:
        return "silent_wrong", "invalid output: " + "; ".join(problems[:3]), notes
    if not summary_path.is_file():
        return "silent_wrong", "exit 0 without summary.json", notes
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    stale = stale_outputs(plan.out, summary, user)
    if stale:
        return "silent_wrong", "stale outputs left unlisted: " + ", ".join(stale[:4]), notes
    if plan.check is not None:
        why = plan.check(plan.out, summary)
        if why:
            return "silent_wrong", why, notes
    flagged = flags(summary)
    if plan.expect == "bad":
        if flagged or done.returncode == 3:
            return "flagged", "; ".join(flagged)[:300] or "exit 3", notes
        return "silent_wrong", "a known-bad input passed as ok", notes
    if plan.expect == "same" and plan.reference is not None:
        why = compare_with_reference(plan.out, summary, ws.reference(plan.reference))
        if why:
            return "silent_wrong", why, notes
    if flagged:
        return "flagged", "; ".join(flagged)[:300], notes
    return "ok", "", notes


def run_attack(ws: Workspace, attack: Attack, folder: Path) -> Outcome:
    """Build, run (and kill, and re-run), and judge one case."""
    start = time.perf_counter()
    folder.mkdir(parents=True)
    try:
        plan = attack.build(ws, folder)
    except Exception as exc:  # a harness failure is reported, not raised
        return Outcome(attack.klass, attack.name, "crash", 0.0, f"harness: {exc!r}")

    def user_files(p: Path) -> bool:
        return os.fsencode(p).hex() in plan.tool_owned

    before = snapshot(plan.root, skip=user_files)
    user = set(before)
    notes: list[str] = []
    if plan.kill_after is not None:
        killed = run_cli(
            plan.config, plan.root, args=plan.args, timeout=plan.timeout, kill_after=plan.kill_after
        )
        if killed.timed_out or not killed.killed:
            notes.append(f"finished before the kill (exit {killed.returncode})")
        problems = output_problems(plan.out, user)
        if problems:
            seconds = time.perf_counter() - start
            detail = "half-written after SIGKILL: " + "; ".join(problems[:3])
            return Outcome(attack.klass, attack.name, "silent_wrong", seconds, detail, notes)
    done = run_cli(plan.config, plan.root, args=plan.args, timeout=plan.timeout)
    outcome, detail, more = judge(ws, plan, done, user)
    notes += more
    after = snapshot(plan.root, skip=user_files)
    lost = [k for k, v in before.items() if after.get(k) != v]
    base_after = snapshot(ws.base)
    lost += [k for k, v in ws.base_hashes.items() if base_after.get(k) != v]
    if lost:
        names = ", ".join(printable(os.fsdecode(bytes.fromhex(k))) for k in lost[:4])
        outcome, detail = "data_loss", f"{len(lost)} user file(s) changed or deleted: {names}"
        ws.base_hashes = base_after
    left = leftovers(plan.out, user)
    if left and outcome not in FAILURES:
        notes.append("temporaries left: " + ", ".join(left[:4]))
    return Outcome(attack.klass, attack.name, outcome, time.perf_counter() - start, detail, notes)


def run_suite(
    attacks: list[Attack], folder: Path, *, log: Callable[[str], None] = print
) -> list[Outcome]:
    """Run every attack in its own folder under ``folder``; return the outcomes."""
    ws = Workspace(folder)
    outcomes = []
    for i, attack in enumerate(attacks):
        result = run_attack(ws, attack, folder / f"case-{i:03d}")
        outcomes.append(result)
        log(
            f"[{i + 1}/{len(attacks)}] {attack.klass:<12} {attack.name:<44} {result.outcome:<12}"
            f" {result.seconds:5.1f} s  {result.detail[:160]}"
        )
    return outcomes


def counts(outcomes: list[Outcome]) -> dict[str, dict[str, int]]:
    """Outcome counts per class (and ``all``)."""
    table: dict[str, dict[str, int]] = {}
    for o in outcomes:
        for key in (o.klass, "all"):
            row = table.setdefault(key, {"tried": 0, **dict.fromkeys(OUTCOMES, 0)})
            row["tried"] += 1
            row[o.outcome] += 1
    return table


def format_table(outcomes: list[Outcome]) -> str:
    """A Markdown table of the counts per class."""
    head = ["class", "tried", *OUTCOMES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    table = counts(outcomes)
    for key in sorted(table, key=lambda k: (k == "all", k)):
        row = table[key]
        lines.append("| " + " | ".join([key, *(str(row[h]) for h in head[1:])]) + " |")
    return "\n".join(lines)
