"""``sf.datasets``: synthetic data with known ground truth.

Populated by later work; the namespace exists so that user code can rely on it.
"""

__all__: list[str] = []
