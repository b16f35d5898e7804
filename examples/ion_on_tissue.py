"""Put an ion image on the H&E, and average MSI pixels onto Visium spots.

``sf.pl.ion_image`` resamples the ion through a moving → reference transform onto the H&E, with
both axes in H&E µm. ``sf.tl.map_to_spots`` gives one MSI spectrum per Visium spot, weighting each
MSI pixel square by the area it shares with the 55 µm spot disc.

The ground-truth transforms of the synthetic trio stand in for a registration here; see
``register_msi_to_he.py`` for how to get one from the images.

    python examples/ion_on_tissue.py        # writes trio/ and ion_on_he.png here
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
he = sf.io.read_histology(trio.he)
visium = sf.io.read_visium(trio.visium)

# One region's marker ion, drawn on the H&E through MSI µm → H&E µm.
region, mz = next(iter(trio.marker_ions.items()))
mz = float(np.atleast_1d(mz)[0])
sf.pl.ion_image(msi, mz, he=he, transform=trio.msi_to_he, ppm=20, save="ion_on_he.png")
print(f"m/z {mz:.4f} marks region {region!r}")

# MSI pixels → Visium spots (area-weighted mean); obs says how much of each disc MSI covers.
spots = sf.tl.map_to_spots(msi, visium, transform=trio.msi_to_visium)
print(spots)
print(spots.obs[["n_msi_pixels", "msi_coverage", "has_msi"]].describe().round(2))

# The marker is brighter on the spots of its region than elsewhere.
column = int(np.argmin(np.abs(spots.var["mz"].to_numpy() - mz)))
values = np.asarray(spots.X[:, column]).ravel()
inside = np.asarray(trio.spot_labels) == trio.region_names.index(region)
covered = spots.obs["has_msi"].to_numpy()
print(f"mean intensity in {region}: {np.nanmean(values[inside & covered]):.2f}, "
      f"elsewhere: {np.nanmean(values[~inside & covered]):.2f}")  # fmt: skip
