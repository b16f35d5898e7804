"""``sf.pl``: plots, and the landmark picker.

Each plot returns its matplotlib Figure and never calls ``plt.show()``; :func:`pick_landmarks`
returns its napari window. Images are drawn by the kind of picture they are
(:mod:`spatialfuse.pl.stain`): a bright-field stain in RGB (grey under an MSI), fluorescence on
black in its channels' colours, the MSI in viridis (plasma over fluorescence).

- :func:`registration_qc`: overlay, checkerboard, outlines and landmark residuals of a registration;
- :func:`ion_image`: one ion on its own MSI grid, or resampled onto the H&E through a transform;
- :func:`gene_and_ion`: a gene and an ion side by side on the tissue (squidpy);
- :func:`joint_clusters`: cluster labels on the tissue (squidpy);
- :func:`correlation_heatmap`: gene × ion correlations with significance marks;
- :func:`spectrum`: the reference spectrum with the peaks :func:`spatialfuse.pp.pick_peaks`
  picked (and their annotation names);
- :func:`recalibration`: the m/z error at each reference peak before and after
  :func:`spatialfuse.pp.recalibrate`;
- :func:`pick_landmarks`: an interactive napari window to click landmark pairs, with the fit and
  its leave-one-out error live (the optional extra ``spatialfuse[napari]``; napari is imported
  only when it is called).
"""

from spatialfuse.pl._heatmap import correlation_heatmap
from spatialfuse.pl._ion_image import ion_image
from spatialfuse.pl._landmark_picker import pick_landmarks
from spatialfuse.pl._registration import registration_qc
from spatialfuse.pl._spectrum import recalibration, spectrum
from spatialfuse.pl._spots import gene_and_ion, joint_clusters

__all__ = [
    "correlation_heatmap",
    "gene_and_ion",
    "ion_image",
    "joint_clusters",
    "pick_landmarks",
    "recalibration",
    "registration_qc",
    "spectrum",
]
