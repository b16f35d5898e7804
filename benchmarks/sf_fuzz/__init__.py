"""Mutation fuzzing of spatialfuse's readers (imzML, Visium, histology, run config).

``runner`` runs cases in a worker process with a time bound per case and an address-space limit;
``imzml``, ``visium``, ``histology`` and ``config`` build the cases of one reader each and check
their outcome; ``mutate`` holds the byte- and text-level mutators they share.
``benchmarks/fuzz_readers.py`` is the command line; ``docs/fuzzing.md`` describes both.
"""

READERS = ("imzml", "visium", "config", "histology")
