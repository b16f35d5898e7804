"""Registration through intermediate images, and Visium's µm ↔ full-res pixel relation."""

from __future__ import annotations

from dataclasses import dataclass

from spatialfuse.core.transforms import AffineTransform, Transform, compose
from spatialfuse.core.visium_geometry import visium_um_per_px
from spatialfuse.reg._register import RegistrationResult, register


def visium_um_to_fullres_px(visium) -> AffineTransform:
    """Map Visium image µm (``obsm["spatial_um"]``) to full-res pixels (``obsm["spatial"]``).

    ``px = µm / u − ½`` with ``u = uns["spatialfuse"]["um_per_px"]`` (pixel centres, see
    ``docs/coordinates.md``). Compose it after a transform into the Visium frame to draw on the H&E
    the way squidpy does.

    Returns
    -------
    AffineTransform
        Visium µm → full-resolution pixel coordinates.
    """
    u = visium_um_per_px(visium)
    return AffineTransform([[1 / u, 0, -0.5], [0, 1 / u, -0.5], [0, 0, 1]], model="similarity")


@dataclass
class ChainResult:
    """Registrations along a path of images, and their composition first → last."""

    transform: Transform
    steps: list[RegistrationResult]

    @property
    def ok(self) -> bool:
        """Whether every step passed its quality checks."""
        return all(step.ok for step in self.steps)

    @property
    def failures(self) -> list[str]:
        """Failed checks, prefixed by the step they belong to."""
        return [f"step {i + 1}: {f}" for i, s in enumerate(self.steps) for f in s.failures]


def register_chain(images, *, models: str | list[str] = "affine", **kwargs) -> ChainResult:
    """Register ``images[0] → images[1] → … → images[-1]`` and compose the steps.

    For example ``register_chain([msi, he_of_msi_section, visium])`` gives MSI µm → Visium µm
    through the H&E of the MSI section (MSI ↔ H&E of the same section is easier than MSI ↔ a
    serial section). Each step is a :func:`register` call (``kwargs`` are passed on); ``models``
    gives one model for all steps or one per step.

    Returns
    -------
    ChainResult
        ``transform`` maps the first input's µm to the last's; ``steps`` holds each result.
    """
    if len(images) < 2:
        raise ValueError("a chain needs at least two images")
    n = len(images) - 1
    per_step = [models] * n if isinstance(models, str) else list(models)
    if len(per_step) != n:
        raise ValueError(f"{n} registration steps but {len(per_step)} models")
    steps = [register(images[i], images[i + 1], model=per_step[i], **kwargs) for i in range(n)]
    transform = compose(*[s.transform for s in reversed(steps)])
    return ChainResult(transform, steps)
