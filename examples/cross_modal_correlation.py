"""Which genes and ions co-vary across the tissue, with p-values that account for space.

Neighbouring spots are not independent, so a plain Pearson test is far too optimistic on spatial
data. ``sf.tl.cross_modal_correlation`` corrects the degrees of freedom (Dutilleul's effective
sample size, ``n_eff``) or, with ``null="msr"``, compares against spatially autocorrelated random
maps. The trio's design says which gene and ion groups mark the same region.

    python examples/cross_modal_correlation.py   # writes trio/, correlation.png, gene_and_ion.png
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import spatialfuse as sf

trio = sf.datasets.synthetic_trio(
    Path("trio"), seed=0, tissue_size_um=(1500.0, 1200.0), he_pixel_size_um=4.0,
    n_ions=40, n_genes=60, serial_section=False,
)  # fmt: skip
msi = sf.io.read_imzml(trio.msi)
visium = sf.io.read_visium(trio.visium)

spots = sf.tl.map_to_spots(msi, visium, transform=trio.msi_to_visium)
sf.pp.normalize_msi(spots, method="tic")  # per-spot TIC, then log1p
sf.pp.preprocess_rna(visium, n_comps=15)
mdata = sf.tl.joint_table(visium, spots)

table = sf.tl.cross_modal_correlation(mdata, method="pearson", null="dutilleul", n_top=30)
significant = table[table["p_adjusted"] < 0.05]
print(f"{len(table)} gene × ion pairs tested, {len(significant)} significant after FDR")
print(significant.head(8).round(4).to_string(index=False))

# What are the significant ions by design? (The MSI m/z differ from the design's in the 4th
# decimal, so match by nearest m/z.) Marker pairs should mark a common region.
gene_regions = {}
for region, genes in trio.marker_genes.items():
    for gene in genes:
        gene_regions.setdefault(gene, set()).add(region)
design = trio.ions.reset_index(drop=True)
nearest = np.abs(design["mz"].to_numpy()[None, :] - significant["mz"].to_numpy()[:, None])
kinds = design.iloc[nearest.argmin(axis=1)]
print("kinds of the significant ions:", kinds["kind"].value_counts().to_dict())
shared_region = [
    bool(gene_regions.get(gene, set()) & set(target.split("+")))
    for gene, kind, target in zip(significant["gene"], kinds["kind"], kinds["target"], strict=True)
    if kind == "marker"
]
print(f"marker-ion pairs whose gene marks a region of the ion: {sum(shared_region)} of "
      f"{len(shared_region)}")  # fmt: skip

sf.pl.correlation_heatmap(table, n_genes=12, n_ions=12, save="correlation.png")
best = significant.iloc[0] if len(significant) else table.iloc[0]
sf.pl.gene_and_ion(mdata, best["gene"], best["ion"], save="gene_and_ion.png")
