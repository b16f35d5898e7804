"""Fit a transform to landmark pairs, judge it by leave-one-out error, and store it.

When you have clicked corresponding points (e.g. in napari or QuPath, or exported from MAGPIE as
``X_left,Y_left,X_right,Y_right``), ``sf.reg.from_landmarks`` fits a transform and reports the
fiducial error (the fit's own residuals) and the leave-one-out target error (each landmark
predicted from the others: the honest estimate). Here the trio's landmarks get 10 µm of
clicking noise.

    python examples/landmarks.py        # writes trio/, landmarks.csv and msi_to_he.json here
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import spatialfuse as sf

trio = sf.datasets.synthetic_trio(
    Path("trio"), seed=0, tissue_size_um=(1500.0, 1200.0), he_pixel_size_um=4.0,
    n_ions=40, n_genes=60, serial_section=False,
)  # fmt: skip
rng = np.random.default_rng(1)
moving = trio.landmarks_msi_um + rng.normal(0, 10, trio.landmarks_msi_um.shape)
fixed = trio.landmarks_he_um + rng.normal(0, 10, trio.landmarks_he_um.shape)

# A CSV in MAGPIE's layout (left = moving = MSI, right = fixed = H&E), in µm.
table = pd.DataFrame(np.hstack([moving, fixed]), columns=["X_left", "Y_left", "X_right", "Y_right"])
table.to_csv("landmarks.csv", index=False)
moving, fixed = sf.reg.read_landmarks("landmarks.csv")

# The true error is measured at every MSI pixel centre (docs/coordinates.md), not at landmarks.
centres = (np.asarray(trio.msi_coords) - 0.5) * np.asarray(trio.msi_pixel_size_um)
for model in ["similarity", "affine", "tps"]:
    fit = sf.reg.from_landmarks(moving, fixed, model=model)
    truth = np.linalg.norm(fit.transform.apply(centres) - trio.msi_to_he.apply(centres), axis=1)
    fre, loo = np.median(fit.fre_um), np.median(fit.loo_tre_um)
    print(f"{model:>10}: FRE {fre:5.1f} µm, leave-one-out TRE {loo:5.1f} µm, "
          f"true error {np.median(truth):5.1f} µm")  # fmt: skip

# FRE shrinks as the model gets more flexible; the leave-one-out TRE says whether that helped.
fit = sf.reg.from_landmarks(moving, fixed, model="affine")
fit.transform.save("msi_to_he.json")
again = sf.reg.Transform.load("msi_to_he.json")
assert np.allclose(again.apply(moving), fit.transform.apply(moving))
print(again)
