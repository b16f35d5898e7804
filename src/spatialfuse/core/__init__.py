"""The data model at the bottom of the layers: transforms, the MSI raster and AnnData access.

Every other subpackage (``io``, ``pp``, ``reg``, ``tl``, ``pl``, ``datasets``, ``workflow``,
``cli``) may import from here; this package imports none of them. Public names stay where users
import them (``sf.reg.AffineTransform``, ...); this layer is what the subpackages share.

- :mod:`spatialfuse.core.transforms`: ``Transform`` and its kinds (moving µm → reference µm).
- :mod:`spatialfuse.core.msi_raster`: the MSI pixel grid of an AnnData and point look-up.
- :mod:`spatialfuse.core.visium_geometry`: Visium spot constants, spot centres in µm and µm per
  full-res pixel.
- :mod:`spatialfuse.core.adata`: AnnData checks, which matrix, which rows hold data.
"""
