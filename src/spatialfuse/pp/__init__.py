"""``sf.pp``: per-modality preprocessing, delegated to scanpy / squidpy wherever they have the step.

- :func:`preprocess_rna`: counts → log-normalised → highly variable genes → PCA;
- :func:`normalize_msi`: per-spectrum TIC / RMS / median normalisation and ``log1p`` (dense,
  sparse or lazy dask tables; rows without MSI data stay NaN);
- :func:`filter_ions_spatial`: Moran's I of each ion, flagging the spatially patterned ones;
- :func:`preprocess_msi`: normalise, log, optional spatial filter, scale, PCA;
- :func:`pick_peaks`: profile spectra → centroided pixels × peaks (MAD noise, baseline, S/N);
- :func:`recalibrate`: per-pixel m/z drift at lock masses or the data's own peaks, removed;
- :func:`flag_matrix`: matrix ions and clusters (DHB, CHCA, 9-AA, DAN, …) from their formulas;
- :func:`flag_isotopes`: ¹³C isotope peaks of lighter features (simple deisotoping);
- :func:`spatial_chaos`: how much less fragmented than noise each ion image is.
"""

from spatialfuse.pp._chaos import spatial_chaos
from spatialfuse.pp._isotopes import flag_isotopes
from spatialfuse.pp._matrix import flag_matrix
from spatialfuse.pp._msi import preprocess_msi
from spatialfuse.pp._msi_norm import normalize_msi
from spatialfuse.pp._peaks import pick_peaks
from spatialfuse.pp._recalibrate import recalibrate
from spatialfuse.pp._rna import preprocess_rna
from spatialfuse.pp._spatial_filter import filter_ions_spatial

__all__ = [
    "filter_ions_spatial",
    "flag_isotopes",
    "flag_matrix",
    "normalize_msi",
    "pick_peaks",
    "preprocess_msi",
    "preprocess_rna",
    "recalibrate",
    "spatial_chaos",
]
