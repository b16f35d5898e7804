"""``sf.tl``: integration tools (mapping MSI onto Visium spots and expression onto MSI pixels).

- :func:`map_to_spots`: MSI pixels × m/z → Visium spots × m/z (area-weighted by default);
- :func:`map_to_bins`: MSI pixels × m/z → Visium HD bins × m/z (exact area overlaps, chunked);
  :func:`aggregate_bins`: HD bins → coarser bins (counts summed, mapped MSI area-weighted);
- :func:`map_to_pixels`: Visium spots × genes → MSI pixels × genes;
- :func:`cross_modal_correlation`: gene × ion correlation with spatially aware p-values;
- :func:`joint_table`: expression and spot-mapped MSI in one MuData; :func:`concatenate_modalities`
  makes one AnnData of it;
- :func:`joint_cluster`: Leiden clusters of the spots on all modalities (weighted nearest
  neighbours, concatenation or MOFA+); :func:`cluster_modality`: the same on one modality;
  :func:`spatial_domains`: domains of spot neighbourhoods (CellCharter through squidpy);
- :func:`annotate`: putative names of m/z features from a user database (formulas or masses),
  by adduct and ppm error, every candidate kept.
"""

from spatialfuse.tl._annotate import annotate
from spatialfuse.tl._bins import aggregate_bins, map_to_bins
from spatialfuse.tl._cluster import MissingDependencyError, cluster_modality, joint_cluster
from spatialfuse.tl._correlation import cross_modal_correlation
from spatialfuse.tl._domains import spatial_domains
from spatialfuse.tl._joint import concatenate_modalities, joint_table
from spatialfuse.tl._mapping import map_to_pixels, map_to_spots

__all__ = [
    "MissingDependencyError",
    "aggregate_bins",
    "annotate",
    "cluster_modality",
    "concatenate_modalities",
    "cross_modal_correlation",
    "joint_cluster",
    "joint_table",
    "map_to_bins",
    "map_to_pixels",
    "map_to_spots",
    "spatial_domains",
]
