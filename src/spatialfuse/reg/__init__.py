"""``sf.reg``: transforms in micrometres and registration between modalities.

Every :class:`Transform` maps points ``(x, y)`` in µm from a moving frame into a reference frame.
"""

from spatialfuse.core.transform_graph import TransformGraph
from spatialfuse.core.transforms import (
    INVERSE_TOLERANCE_UM,
    AffineTransform,
    CompositeTransform,
    DisplacementField,
    InverseAccuracyWarning,
    InverseTransform,
    ThinPlateSpline,
    Transform,
    as_points,
    compose,
)
from spatialfuse.reg._chain import ChainResult, register_chain, visium_um_to_fullres_px
from spatialfuse.reg._images import RegistrationImage
from spatialfuse.reg._images import as_registration_image as registration_image
from spatialfuse.reg._landmarks import LandmarkFit, from_landmarks, read_landmarks
from spatialfuse.reg._register import (
    RegistrationResult,
    RegistrationWarning,
    assess,
    register,
)
from spatialfuse.reg._resample import pixel_centres_um, resample
from spatialfuse.reg._similarity import warp_to
from spatialfuse.reg._spot_tissue import spots_on_tissue
from spatialfuse.reg._warp_image import warp_histology

__all__ = [
    "INVERSE_TOLERANCE_UM",
    "AffineTransform",
    "ChainResult",
    "CompositeTransform",
    "DisplacementField",
    "InverseAccuracyWarning",
    "InverseTransform",
    "LandmarkFit",
    "RegistrationImage",
    "RegistrationResult",
    "RegistrationWarning",
    "ThinPlateSpline",
    "Transform",
    "TransformGraph",
    "as_points",
    "assess",
    "compose",
    "from_landmarks",
    "pixel_centres_um",
    "read_landmarks",
    "register",
    "register_chain",
    "registration_image",
    "resample",
    "spots_on_tissue",
    "visium_um_to_fullres_px",
    "warp_histology",
    "warp_to",
]
