"""Cluster Visium spots on expression and MSI together, and score the clusters against the truth.

The pipeline of ``spatialfuse run`` in a dozen calls: MSI onto spots, preprocess each modality,
one MuData with both, weighted-nearest-neighbour Leiden clustering. The synthetic trio knows the
region under every spot, so the adjusted Rand index (ARI) says how well the clusters recover it.

    python examples/joint_clustering.py        # writes trio/ and joint_clusters.png here
"""

from __future__ import annotations

from pathlib import Path

from sklearn.metrics import adjusted_rand_score

import spatialfuse as sf

trio = sf.datasets.synthetic_trio(
    Path("trio"), seed=0, tissue_size_um=(1500.0, 1200.0), he_pixel_size_um=4.0,
    n_ions=40, n_genes=60, serial_section=False,
)  # fmt: skip
msi = sf.io.read_imzml(trio.msi)
visium = sf.io.read_visium(trio.visium)

# The true MSI → Visium transform stands in for sf.reg.register_chain([msi, he, visium]).
spots = sf.tl.map_to_spots(msi, visium, transform=trio.msi_to_visium)
sf.pp.preprocess_rna(visium, n_comps=15)  # counts → log1p → HVGs → PCA, in place
sf.pp.preprocess_msi(spots, n_comps=15)  # TIC → log1p → scale → PCA, in place
mdata = sf.tl.joint_table(visium, spots)  # MuData: modalities "rna" and "msi" on the same spots

n_regions = len(trio.region_names)
sf.tl.joint_cluster(mdata, method="wnn", n_clusters=n_regions, key_added="joint")
sf.tl.cluster_modality(mdata, "rna", n_clusters=n_regions, key_added="rna_only")
sf.tl.cluster_modality(mdata, "msi", n_clusters=n_regions, key_added="msi_only")

for key in ["joint", "rna_only", "msi_only"]:
    print(f"{key:>9}: ARI {adjusted_rand_score(trio.spot_labels, mdata.obs[key]):.2f}")
print(mdata.obs[["joint_weight_rna", "joint_weight_msi"]].mean().round(2))  # per-spot WNN weights

sf.pl.joint_clusters(mdata, "joint", save="joint_clusters.png")
