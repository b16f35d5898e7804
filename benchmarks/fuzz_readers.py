"""Mutation fuzzing of spatialfuse's imzML, Visium, histology and run-config readers.

See docs/fuzzing.md.

Every case is one mutated input; it must end in a correct read or one of spatialfuse's own errors,
within the time bound and the memory bound. Prints a table of outcome counts and, for every
failure, the case seed that replays it; exits 1 when any case failed.

    python benchmarks/fuzz_readers.py --reader all --cases 100000 --seed 1
    python benchmarks/fuzz_readers.py --reader imzml --cases 500 --timeout-per-case 10
    python benchmarks/fuzz_readers.py --reader imzml --replay 4294967338 --keep /tmp/case
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sf_fuzz import READERS, runner

#: How ``--reader all`` splits ``--cases`` (by the ground each reader covers and a case's cost).
SHARES = {"imzml": 0.45, "visium": 0.15, "config": 0.25, "histology": 0.15}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reader", choices=[*READERS, "all"], default="all")
    parser.add_argument("--cases", type=int, default=1000, help="cases in all (split for 'all')")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--first-case", type=int, default=0, help="index of the first case")
    parser.add_argument(
        "--timeout-per-case",
        type=float,
        default=10.0,
        help="seconds before a case counts as a hang",
    )
    parser.add_argument(
        "--memory-mb",
        type=int,
        default=1024,
        help="address space a worker may grow by after start-up (RLIMIT_AS); 0: unlimited",
    )
    parser.add_argument("--json", type=Path, help="write the summaries here")
    parser.add_argument("--progress", type=float, default=30.0, help="seconds between reports")
    parser.add_argument("--replay", type=int, help="run the case with this case seed, in-process")
    parser.add_argument("--keep", type=Path, help="with --replay: write the case's files here")
    args = parser.parse_args(argv)

    if args.replay is not None:
        if args.reader == "all":
            parser.error("--replay needs --reader")
        record = runner.replay(args.reader, args.replay, keep=args.keep)
        print(json.dumps(record, indent=2, default=str))
        return int(record["category"] in runner.FAILURES)

    readers = READERS if args.reader == "all" else (args.reader,)
    summaries = []
    for reader in readers:
        cases = args.cases if len(readers) == 1 else max(1, round(args.cases * SHARES[reader]))
        summaries.append(
            runner.run(
                reader,
                cases=cases,
                seed=args.seed,
                timeout=args.timeout_per_case,
                memory_mb=args.memory_mb,
                first_case=args.first_case,
                progress_every=args.progress,
            )
        )
        print(runner.format_summary(summaries[-1:]), flush=True)
    if len(summaries) > 1:
        print("\n" + runner.format_summary(summaries).split("\n\n")[0])
    if args.json:
        from spatialfuse._io_utils import atomic_path

        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(summaries, indent=1, default=str))
    return int(any(s["failure_count"] for s in summaries))


if __name__ == "__main__":
    sys.exit(main())
