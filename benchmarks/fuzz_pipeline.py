"""Pipeline-level attack suite: ``spatialfuse run`` under hostile conditions (issue 14).

See docs/fuzzing.md ("The pipeline around the readers"). Each case runs the command in a
subprocess on a small synthetic trio and ends as clean_error, flagged, ok, silent_wrong, crash,
hang or data_loss; prints the counts per class and every case, exits 1 when any case is one of
the last four.

    nice -n 10 python benchmarks/fuzz_pipeline.py --seed 2026 --json pipeline.json
    python benchmarks/fuzz_pipeline.py --quick --keep /tmp/attacks
    python benchmarks/fuzz_pipeline.py --only kill,cache
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sf_fuzz.pipeline import FAILURES, format_table, run_suite
from sf_fuzz.pipeline_cases import all_attacks, quick_attacks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--scale", type=int, default=1, help="multiplies the random cases")
    parser.add_argument("--quick", action="store_true", help="only the tests' quick slice")
    parser.add_argument("--only", default="", help="comma-separated classes to run")
    parser.add_argument("--keep", type=Path, help="keep the cases' folders here")
    parser.add_argument("--json", type=Path, help="write every outcome here")
    args = parser.parse_args(argv)

    attacks = quick_attacks(args.seed) if args.quick else all_attacks(args.seed, scale=args.scale)
    if args.only:
        wanted = set(args.only.split(","))
        attacks = [a for a in attacks if a.klass in wanted]
    folder = args.keep or Path(tempfile.mkdtemp(prefix="sf-pipeline-attacks-"))
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        outcomes = run_suite(attacks, folder)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    print()
    print(format_table(outcomes))
    print(f"\n{len(outcomes)} cases in {time.perf_counter() - start:.0f} s")
    for o in outcomes:
        if o.outcome in FAILURES or o.notes:
            print(f"- {o.klass} / {o.name}: {o.outcome} {o.detail} {'; '.join(o.notes)}")
    if args.json:
        args.json.write_text(
            json.dumps([dataclasses.asdict(o) for o in outcomes], indent=1), encoding="utf-8"
        )
    return 1 if any(o.outcome in FAILURES for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
