"""``sf.tl``: integration tools (mapping MSI onto Visium spots and expression onto MSI pixels).

- :func:`map_to_spots`: MSI pixels × m/z → Visium spots × m/z (area-weighted by default);
- :func:`map_to_pixels`: Visium spots × genes → MSI pixels × genes;
- :func:`cross_modal_correlation`: gene × ion correlation with spatially aware p-values.
"""

from spatialfuse.tl._correlation import cross_modal_correlation
from spatialfuse.tl._mapping import map_to_pixels, map_to_spots

__all__ = ["cross_modal_correlation", "map_to_pixels", "map_to_spots"]
