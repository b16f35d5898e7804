"""``sf.tl``: integration tools (mapping MSI onto Visium spots, joint tables, clustering).

Populated by later work; the namespace exists so that user code can rely on it.
"""

__all__: list[str] = []
