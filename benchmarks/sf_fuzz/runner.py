"""Run fuzz cases in a worker process, each bounded in time and memory; count their outcomes.

A *case* is one mutated input, built from a 64-bit case seed (so any case can be replayed alone),
written to a fresh folder and handed to the reader under test, whose results are then checked.
Each case ends in exactly one category:

``read``
    The reader returned, and everything it returned was checked against an independent decoding
    of the mutated input (or against the unmutated input, for mutations that keep the meaning).
``read_unverified``
    The reader returned and nothing it returned was inconsistent, but the reference decoder could
    not tell what the mutated input holds (for instance malformed XML outside the parts read).
``error``
    The reader raised one of spatialfuse's own errors (a :class:`SpatialfuseError`) naming the
    input; counted by error type.

and the failures, which must never happen:

``other_exception``
    Any other exception escaped (the type and the last frames are recorded).
``wrong_read``
    The reader returned values that differ from what the input holds.
``read_invalid``
    The reader returned data from an input that cannot be read (an array outside the ``.ibd``, two
    conflicting values for one parameter, ...), where it should have raised.
``refused_valid``
    A mutation that keeps the meaning (a comment, reordered keys) made the reader refuse an input
    it reads without the mutation.
``error_unnamed``
    A spatialfuse error whose message names no file of the input.
``timeout``
    The case ran longer than the time bound; the worker is killed and a new one started. The
    worker's stack at 90 % of the bound is recorded (``faulthandler``).
``memory_limit``
    A ``MemoryError``: the worker's address space is limited (``RLIMIT_AS``) to its size after
    start-up plus ``memory_mb``, so an allocation sized by a declared number fails here.
``crash``
    The worker died (a signal, or an abort in C code).
``harness_error``
    The fuzzer itself failed to build the case (a bug here, not in spatialfuse).
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

FAILURES = (
    "other_exception",
    "wrong_read",
    "read_invalid",
    "refused_valid",
    "error_unnamed",
    "timeout",
    "memory_limit",
    "crash",
    "harness_error",
)
#: Environment of the workers: one thread everywhere, so a case's time is its own.
_WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "HDF5_USE_FILE_LOCKING": "FALSE",
}
_STARTUP_TIMEOUT_S = 300.0


class CheckFailed(Exception):
    """A read that returned something it should not have; ``category`` says which failure."""

    def __init__(self, category: str, message: str):
        super().__init__(message)
        self.category = category


@dataclass
class Case:
    """One mutated input: files to write, what to pass to the reader, and how it was made."""

    files: dict[str, bytes]
    target: str
    base: str
    mutations: list[str]
    preserving: bool = False
    extra: dict = field(default_factory=dict)


def case_seed(seed: int, index: int) -> int:
    """The seed of case ``index`` of a run with ``seed``; replaying it rebuilds the same case."""
    return ((seed & 0xFFFFFFFF) << 32) | (index & 0xFFFFFFFF)


def write_case(case: Case, folder: Path) -> Path:
    """Write ``case``'s files under ``folder`` (created); return the path given to the reader."""
    folder.mkdir(parents=True)
    for rel, data in case.files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder / case.target


def _remove(folder: Path) -> None:
    # Files still memory-mapped by a reader can be unlinked safely (never rewritten in place).
    shutil.rmtree(folder, ignore_errors=True)


def run_case(module, ctx, seed: int, folder: Path) -> dict:
    """Build, write and exercise one case; return its record (category, error type, detail)."""
    import numpy as np

    from spatialfuse.errors import SpatialfuseError

    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    try:
        case = module.make_case(ctx, rng)
    except Exception as exc:
        detail = _traceback_tail(exc)
        return {"seed": seed, "mutations": [], "category": "harness_error", "detail": detail}
    record = {
        "seed": seed,
        "base": case.base,
        "mutations": list(case.mutations),
        "category": "",
        "error_type": "",
        "detail": "",
        "note": "",
    }
    try:
        target = write_case(case, folder)
    except Exception as exc:
        _remove(folder)
        record.update(category="harness_error", detail=_traceback_tail(exc))
        return record
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            record["category"] = module.exercise(ctx, case, target, rng)
    except CheckFailed as exc:
        record["category"], record["detail"] = exc.category, str(exc)[:2000]
    except SpatialfuseError as exc:
        record["error_type"] = type(exc).__name__
        record["detail"] = str(exc)[:500]
        if case.preserving and module.base_reads(ctx, case.base):
            record["category"] = "refused_valid"
        elif str(folder) not in str(exc):
            record["category"] = "error_unnamed"
        else:
            record["category"] = "error"
    except MemoryError as exc:
        record["category"] = "memory_limit"
        record["detail"] = _traceback_tail(exc)
    except Exception as exc:
        record["category"] = "other_exception"
        record["error_type"] = type(exc).__name__
        record["detail"] = _traceback_tail(exc)
    finally:
        _remove(folder)
    record["note"] = case.extra.get("note", "")
    record["seconds"] = time.perf_counter() - started
    return record


def _traceback_tail(exc: BaseException, frames: int = 6) -> str:
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-frames)
    return "".join(lines)[-3000:]


def _vm_size_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _worker_main(conn, reader: str, workdir: str, memory_mb: int, timeout: float) -> None:
    workdir_path = Path(workdir)
    os.environ["SPATIALFUSE_CACHE_DIR"] = str(workdir_path / "cache")
    faulthandler.enable()
    hang_log = open(workdir_path / "hang.log", "w+")  # kept open: faulthandler writes here
    module = importlib.import_module(f"sf_fuzz.{reader}")
    ctx = module.setup(workdir_path)
    baseline = _vm_size_bytes()
    if memory_mb > 0:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = baseline + (memory_mb << 20)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    conn.send(("ready", {"baseline_mb": baseline / 2**20, "bases": module.describe_bases(ctx)}))
    counter = 0
    while True:
        seed = conn.recv()
        if seed is None:
            break
        counter += 1
        hang_log.seek(0)
        hang_log.truncate()
        faulthandler.dump_traceback_later(timeout * 0.9, file=hang_log)
        record = run_case(module, ctx, seed, workdir_path / f"case{os.getpid()}_{counter}")
        faulthandler.cancel_dump_traceback_later()
        record["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        conn.send(record)
        if record["category"] == "memory_limit":
            break  # a fresh worker for the next case: this one may hold half-built state


class _Worker:
    """A worker interpreter started with ``subprocess`` (not ``multiprocessing``: the caller's
    ``__main__`` need not be importable), talking over a socket pair."""

    def __init__(self, reader: str, workdir: Path, memory_mb: int, timeout: float):
        from multiprocessing.connection import Connection

        ours, theirs = socket.socketpair()
        self.workdir = workdir
        self.log = open(workdir / "worker.log", "ab")  # the worker's stdout/stderr
        package_parent = str(Path(__file__).resolve().parents[1])
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "from sf_fuzz.runner import _worker_entry; _worker_entry()"
        )
        args = [package_parent, str(theirs.fileno()), reader, str(workdir), str(memory_mb)]
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, *args, str(timeout)],
            env={**os.environ, **_WORKER_ENV},
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        if not self.conn.poll(_STARTUP_TIMEOUT_S):
            self.kill()
            raise RuntimeError(f"the {reader} fuzz worker did not start; see {self.log.name}")
        try:
            tag, self.info = self.conn.recv()
        except EOFError:
            self.kill()
            tail = (workdir / "worker.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the {reader} fuzz worker failed:\n{tail}") from None
        assert tag == "ready"

    def wait_exit(self) -> int | None:
        try:
            return self.process.wait(5)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self) -> str:
        """The worker's last fatal-error report (faulthandler's stack), without the module list."""
        self.log.flush()
        try:
            text = (self.workdir / "worker.log").read_text(errors="replace")
        except OSError:
            return ""
        start = max(text.rfind("Fatal Python error"), 0)
        report = text[start:].split("\nExtension modules:")[0]
        return report[-3000:]

    def hang_report(self) -> str:
        try:
            return (self.workdir / "hang.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.process.kill()
        with contextlib.suppress(Exception):
            self.process.wait(10)
        self.conn.close()
        self.log.close()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.send(None)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.kill()


def _worker_entry() -> None:
    from multiprocessing.connection import Connection

    _, fd, reader, workdir, memory_mb, timeout = sys.argv[1:7]
    _worker_main(Connection(int(fd)), reader, workdir, int(memory_mb), float(timeout))


def run(
    reader: str,
    *,
    cases: int,
    seed: int = 0,
    timeout: float = 10.0,
    memory_mb: int = 1024,
    workdir: str | os.PathLike | None = None,
    first_case: int = 0,
    progress_every: float = 0.0,
    max_failures_kept: int = 50,
    keep_records: bool = False,
) -> dict:
    """Run ``cases`` cases of ``reader`` in a worker process; return the summary.

    Parameters
    ----------
    reader
        ``"imzml"``, ``"visium"``, ``"histology"`` or ``"config"``.
    cases, seed, first_case
        Cases ``first_case … first_case + cases - 1`` of the run with ``seed``.
    timeout
        Seconds a case may take before its worker is killed (counted as ``timeout``).
    memory_mb
        Address space a worker may grow by after start-up (0: no limit).
    workdir
        Scratch folder (default: a new temporary folder, removed afterwards).
    progress_every
        Print progress to stderr every so many seconds (0: never).
    max_failures_kept
        Failure records kept in the summary (all are counted).
    keep_records
        Keep every case's record in the summary (``records``).

    Returns
    -------
    dict
        ``reader``, ``seed``, ``cases``, ``counts`` (per category), ``errors`` (per error type),
        ``failures`` (records with the case seed, mutations and detail), ``failure_count``,
        ``mutations`` (cases and failures per mutator), ``seconds`` and ``workers`` (starts,
        baseline and peak memory).
    """
    own_workdir = workdir is None
    root = Path(tempfile.mkdtemp(prefix=f"sf-fuzz-{reader}-") if own_workdir else workdir)
    root.mkdir(parents=True, exist_ok=True)
    counts: Counter = Counter()
    errors: Counter = Counter()
    notes: Counter = Counter()
    note_examples: list[dict] = []
    records: list[dict] = []
    per_mutation: dict[str, Counter] = {}
    failures: list[dict] = []
    failure_count = 0
    worker: _Worker | None = None
    starts = 0
    baseline_mb = peak_rss_mb = 0.0
    bases = None
    slowest = (0.0, None)
    started = last_report = time.perf_counter()
    try:
        for index in range(first_case, first_case + cases):
            seed_i = case_seed(seed, index)
            if worker is None:
                worker = _Worker(reader, root, memory_mb, timeout)
                starts += 1
                baseline_mb = max(baseline_mb, worker.info["baseline_mb"])
                bases = worker.info["bases"]
            worker.conn.send(seed_i)
            record = None
            if worker.conn.poll(timeout):
                try:
                    record = worker.conn.recv()
                except (EOFError, OSError):
                    code = worker.wait_exit()
                    log = worker.log_tail()
                    worker.kill()
                    worker = None
                    record = {"category": "crash", "detail": f"worker exit code {code}\n{log}"}
            else:
                report = worker.hang_report()
                worker.kill()
                worker = None
                record = {"category": "timeout", "detail": f"over {timeout} s\n{report}"}
            if record["category"] == "memory_limit" and worker is not None:
                worker.stop()
                worker = None
            record.setdefault("seed", seed_i)
            record["index"] = index
            category = record["category"]
            counts[category] += 1
            if keep_records:
                records.append(record)
            if category in ("error", "error_unnamed", "refused_valid"):
                errors[record.get("error_type", "")] += 1
            if record.get("note"):
                notes[record["note"]] += 1
                if notes[record["note"]] <= 5:
                    note_examples.append(record)
            peak_rss_mb = max(peak_rss_mb, record.get("rss_mb", 0.0))
            if record.get("seconds", 0.0) > slowest[0]:
                slowest = (record["seconds"], seed_i)
            for name in record.get("mutations", []) or ["(unknown: the case did not finish)"]:
                stats = per_mutation.setdefault(name, Counter())
                stats["cases"] += 1
                stats["failures"] += category in FAILURES
            if category in FAILURES:
                failure_count += 1
                if len(failures) < max_failures_kept:
                    failures.append(record)
            now = time.perf_counter()
            if progress_every and now - last_report >= progress_every:
                last_report = now
                done = index - first_case + 1
                print(
                    f"[{reader}] {done}/{cases} cases, {failure_count} failures, "
                    f"{(now - started) / done * 1e3:.1f} ms/case",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        if worker is not None:
            worker.stop()
        if own_workdir:
            shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - started
    return {
        "reader": reader,
        "seed": seed,
        "first_case": first_case,
        "cases": cases,
        "timeout_s": timeout,
        "memory_mb": memory_mb,
        "counts": dict(counts),
        "errors": dict(errors),
        "notes": dict(notes),
        "note_examples": note_examples,
        "failure_count": failure_count,
        "failures": failures,
        "mutations": {k: dict(v) for k, v in sorted(per_mutation.items())},
        "bases": bases,
        "seconds": {
            "total": elapsed,
            "per_case_ms": elapsed / max(cases, 1) * 1e3,
            "slowest_case_s": slowest[0],
            "slowest_case_seed": slowest[1],
        },
        "workers": {"starts": starts, "baseline_mb": baseline_mb, "peak_rss_mb": peak_rss_mb},
        **({"records": records} if keep_records else {}),
    }


def replay(reader: str, seed: int, keep: str | os.PathLike | None = None) -> dict:
    """Run the case with case seed ``seed`` in this process, without limits; return its record.

    With ``keep``, the mutated input is also written to that folder for inspection.
    """
    import numpy as np

    module = importlib.import_module(f"sf_fuzz.{reader}")
    root = Path(tempfile.mkdtemp(prefix=f"sf-fuzz-replay-{reader}-"))
    try:
        ctx = module.setup(root)
        if keep is not None:
            write_case(module.make_case(ctx, np.random.default_rng(seed)), Path(keep))
        return run_case(module, ctx, seed, root / "case")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def format_summary(summaries: list[dict]) -> str:
    """The outcome counts of one or more runs as a plain-text table, and their failures."""
    columns = ("cases", "read", "read_unverified", "error", *FAILURES)
    head = f"{'reader':8s}" + "".join(f"{c:>16s}" for c in columns)
    lines = [head, "-" * len(head)]
    totals: Counter = Counter()
    for s in summaries:
        row = {"cases": s["cases"], **s["counts"]}
        totals.update(row)
        lines.append(f"{s['reader']:8s}" + "".join(f"{row.get(c, 0):>16,d}" for c in columns))
    if len(summaries) > 1:
        lines.append(f"{'total':8s}" + "".join(f"{totals.get(c, 0):>16,d}" for c in columns))
    for s in summaries:
        errors = ", ".join(f"{k} {v:,}" for k, v in sorted(s["errors"].items()))
        lines.append(f"\n{s['reader']}: spatialfuse errors by type: {errors or 'none'}")
        sec = s["seconds"]
        lines.append(
            f"{s['reader']}: {sec['total']:.0f} s, {sec['per_case_ms']:.1f} ms/case, slowest "
            f"case {sec['slowest_case_s']:.2f} s (seed {sec['slowest_case_seed']}); worker starts "
            f"{s['workers']['starts']}, address space at start {s['workers']['baseline_mb']:.0f} "
            f"MiB (+{s['memory_mb']} MiB allowed), peak RSS {s['workers']['peak_rss_mb']:.0f} MiB"
        )
        for record in s["failures"]:
            lines.append(
                f"  FAILURE {record['category']} case {record['index']} (replay: --reader "
                f"{s['reader']} --replay {record['seed']}) mutations {record.get('mutations')}: "
                + (record.get("detail") or "").strip().replace("\n", "\n    ")[:1500]
            )
    return "\n".join(lines)
