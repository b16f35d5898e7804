"""Make the fuzzer package (``benchmarks/sf_fuzz``) and this folder's helpers importable."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for folder in (str(_HERE), str(_HERE.parents[1] / "benchmarks")):
    if folder not in sys.path:
        sys.path.insert(0, folder)
