"""``bench_real.py`` with the sharpness probe of the "pinned down" check made longer.

Usage::

    python benchmarks/_probe_factor_bench_real.py FACTOR [bench_real.py options ...]

Multiplies ``reg._checks.probe_step_um`` by ``FACTOR`` for the whole run (the neighbour gain
keeps its own 2-pixel probe), then runs ``bench_real.py`` with the options given, e.g.
``3 --no-speed --json out.json``. A study of a rule that was not adopted (session 14,
``docs/failure_detection.md``); it changes nothing outside its own process.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    factor = float(argv[0])
    from spatialfuse.reg import _checks

    original = _checks.probe_step_um
    _checks.probe_step_um = lambda moving, fixed: factor * original(moving, fixed)
    sys.path.insert(0, str(HERE))
    sys.argv = [str(HERE / "bench_real.py"), *argv[1:]]
    runpy.run_path(str(HERE / "bench_real.py"), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
