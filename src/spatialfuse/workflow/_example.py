"""The annotated example run config (kept import-free so ``spatialfuse run --help`` stays fast)."""

EXAMPLE_CONFIG = """\
# spatialfuse run configuration. Paths are relative to this file's folder.
# Run it with:  spatialfuse run config.yaml

# Every output goes into this folder (one folder per run; see "outputs" below).
output: results

# The inputs, each under a name you choose. kind: imzml | msi_zarr | histology | visium.
modalities:
  msi:
    kind: imzml                     # msi_zarr: a store from spatialfuse convert, read lazily
    path: data/msi.imzML            # the .ibd must sit beside it
    pixel_size_um: null             # only for files that do not state their pixel size
  he_msi:                           # H&E of the section the MSI was acquired on
    kind: histology
    path: data/he.ome.tif
    pixel_size_um: null             # only for images without a pixel size (e.g. plain PNG);
                                    # auto: registration estimates it (and reports it)
  visium:
    kind: visium
    path: data/visium               # a Space Ranger output folder

# Registrations, each mapping "moving" onto "fixed". The run composes them along the path from
# the MSI to the Visium modality (here MSI -> H&E of the MSI section -> Visium H&E).
registrations:
  - moving: msi
    fixed: he_msi
    model: affine                   # rigid | similarity | affine | bspline
    landmarks: null                 # optional CSV: moving_x,moving_y,fixed_x,fixed_y or MAGPIE's
                                    # X_left,Y_left,X_right,Y_right (left = moving)
    max_tre_um: null                # with landmarks: fail above this median landmark error
    accept_failed: false            # true: continue even if the quality checks fail
    scale: auto                     # auto | given | estimate: estimate a missing or
                                    # implausible pixel size in the search
    channel: auto                   # auto | od | gray | hematoxylin | eosin (optical channel)
    start_from_landmarks: false     # true: the landmarks (3+ clicked pairs) start the fit
                                    # instead of the automatic search (its way out)
    seed: 0                         # this registration's random sampling
  - moving: he_msi
    fixed: visium
    model: affine

# MSI pixels onto Visium spots.
mapping:
  msi: msi                          # which modality is the MSI ...
  visium: visium                    # ... and which the Visium data
  method: area                      # area | radius | nearest | overlap
  aggregate: mean                   # mean | sum
  min_coverage: 0.0                 # spots whose disc is less covered by MSI count as without
                                    # MSI (0: every spot an MSI pixel touches; 0.5: half)

preprocessing:
  rna:
    n_top_genes: 2000
    n_comps: 30
  msi:
    norm: tic                       # tic | rms | median | none
    log: true
    spatial_filter: false           # keep only spatially autocorrelated ions (Moran's I)
    n_comps: 30

clustering:
  method: concat                    # concat | wnn | mofa (mofa needs mofapy2)
  resolution: auto                  # auto = chosen by cluster stability, or a number
  spatial_smoothing: null           # null = 0.3 where spots have positions; 0 = none;
                                    # below 1 = mix in the spatial neighbour graph
  seed: 0

correlation:
  method: pearson                   # pearson | spearman
  null_model: dutilleul             # spatial significance: dutilleul (modified t-test) | msr
  n_features: 500                   # most variable genes and ions that are paired
  n_top: 20                         # pairs shown in the report
  n_permutations: 999               # msr only: Moran spectral randomisation surrogates
  seed: 0                           # the null model's permutations

# Spectra of the MSI before registration (all off by default; a centroided file needs none).
spectra:
  recalibration:
    enabled: false                  # per-pixel m/z drift against reference peaks, removed
    reference_mz: null              # lock masses; null: the data's most frequent peaks
  peaks:
    enabled: false                  # pick peaks of profile spectra into a centroided table
    snr: 3.0                        # (streamed from the file or store, never whole)
  matrix:
    enabled: false                  # flag matrix ions and clusters (var["matrix"])
    matrix: DHB                     # DHB, CHCA, 9-AA, DAN, SA, NEDC or a formula (or a list)
    drop: false                     # true: remove them from the table later steps use
  isotopes:
    enabled: false                  # flag 13C isotope peaks of lighter features
    drop: false
  spatial_chaos:
    enabled: false                  # score ion images for structure (noise peaks score ~0)
    min_score: 0.5
    drop: false                     # true: remove the images scoring below min_score
  spatial_moran:
    enabled: false                  # Moran's I of each ion image (squidpy)
    min_moran: 0.1
    drop: false
  annotation:
    database: null                  # CSV/TSV of names and formulas or masses (HMDB, LIPID
                                    # MAPS, a METASPACE export); names go into var
    ppm: 5.0

outputs:
  h5mu: true                        # joint table as MuData
  h5ad: true                        # joint table as one AnnData (var["feature_types"])
  spatialdata: true                 # SpatialData zarr with every element in one µm frame
  spaceranger_like: false           # MSI on Visium spots as a Space Ranger folder
  warped_images: false              # histology warped into the Visium frame (pyramidal OME-TIFF)
  report: true                      # self-contained HTML QC report
"""
