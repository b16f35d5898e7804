"""sf.pl.registration_qc draws a result of sf.reg.assess (no initial NMI) and a failed one."""

from __future__ import annotations

import matplotlib
import numpy as np

from spatialfuse.reg import AffineTransform, assess, compose, register

from .conftest import MOVING_PIXEL_UM, make_pair

matplotlib.use("Agg")


def test_qc_figure_of_an_assessed_and_failed_transform(tmp_path):
    from spatialfuse.pl import registration_qc

    moving, fixed, _ = make_pair(1)
    result = register(moving, fixed)
    shift = AffineTransform.from_params(translation=(4 * MOVING_PIXEL_UM, 0.0))
    judged = assess(moving, fixed, compose(result.transform, shift))
    assert "nmi_initial" not in judged.metrics  # nothing was optimised
    fig = registration_qc(judged, save=tmp_path / "qc.png")
    title = fig.get_suptitle()
    assert " ".join(title.split()).endswith(f"NMI {judged.metrics['nmi_final']:.3f}")
    assert not judged.ok
    # the reasons are wrapped to the figure's width, none of them lost
    assert max(len(line) for line in title.splitlines()) <= round(fig.get_figwidth() * 9)
    for reason in judged.failures:
        assert " ".join(reason.split()) in " ".join(title.split())
    assert (tmp_path / "qc.png").stat().st_size > 10_000
    # a registered result still shows initial → final
    title = registration_qc(result).get_suptitle()
    m = result.metrics
    assert " ".join(f"{m['nmi_initial']:.3f} → {m['nmi_final']:.3f}".split()) in " ".join(
        title.split()
    )


def test_outlines_leave_out_specks_and_pinholes_but_keep_real_holes():
    from spatialfuse.pl._registration import _outline

    mask = np.zeros((100, 100), bool)
    mask[20:80, 20:80] = True
    mask[50, 50] = False  # a pinhole in the tissue
    mask[5, 5] = True  # a speck of debris
    mask[30:40, 30:40] = False  # a lumen: 1 % of the image
    outline = _outline(mask)
    assert outline[50, 50] == 1.0 and outline[5, 5] == 0.0
    assert (outline[30:40, 30:40] == 0.0).all() and outline[25, 25] == 1.0


def test_an_assessed_result_prints():
    moving, fixed, truth = make_pair(1)
    text = repr(assess(moving, fixed, truth))
    assert text.startswith("RegistrationResult(given, ") and "NMI " in text and "→" not in text
