"""The multimodal table: Visium expression and spot-mapped MSI in one MuData, or one AnnData."""

from __future__ import annotations

import copy
import warnings
from typing import TYPE_CHECKING

import numpy as np

from spatialfuse.core.adata import check_adata

if TYPE_CHECKING:
    import anndata
    import mudata
    import pandas as pd

__all__ = ["FEATURE_TYPES", "concatenate_modalities", "joint_table"]

#: ``var["feature_types"]`` of each modality in joint tables (10x's and MuData's vocabulary).
FEATURE_TYPES = {"rna": "Gene Expression", "msi": "Metabolite"}
#: ``obs`` columns of the MSI table that describe a spot's MSI coverage.
MSI_OBS = ("has_msi", "msi_coverage", "n_msi_pixels")


def joint_table(
    rna: anndata.AnnData,
    msi_spots: anndata.AnnData,
    *,
    rna_key: str = "rna",
    msi_key: str = "msi",
) -> mudata.MuData:
    """Put Visium expression and MSI aggregated onto the same spots into one MuData.

    Both tables must describe the same spots (the same barcodes); the MSI table is reordered to
    the expression table's order when needed. The inputs are copied, never modified.

    Parameters
    ----------
    rna
        Spots × genes, e.g. from :func:`spatialfuse.io.read_visium` (and
        :func:`spatialfuse.pp.preprocess_rna`).
    msi_spots
        Spots × m/z from :func:`spatialfuse.tl.map_to_spots` (and
        :func:`spatialfuse.pp.preprocess_msi`), with ``obs["has_msi"]`` and the coverage columns.
    rna_key, msi_key
        Names of the two modalities.

    Returns
    -------
    mudata.MuData
        Modalities ``rna_key`` and ``msi_key`` (copies, in the expression table's spot order);
        ``obs_names`` are the barcodes. Slots written:

        - ``obs``: the expression table's ``obs`` columns plus ``has_msi``, ``msi_coverage`` and
          ``n_msi_pixels`` from the MSI table, also copied into the expression modality's
          ``obs`` (a table without them gets ``has_msi`` = its row is all finite,
          ``msi_coverage`` NaN where it has data, else 0, and ``n_msi_pixels`` −1, unknown);
        - ``obsm["spatial"]`` (full-res pixels) and ``obsm["spatial_um"]``, and the same in each
          modality;
        - ``uns["spatial"]`` (images and scale factors), also in each modality, so that
          ``squidpy.pl.spatial_scatter(mdata[msi_key], color=...)`` draws on the H&E;
        - ``var["feature_types"]`` of each modality: ``"Gene Expression"`` / ``"Metabolite"``;
        - ``uns["spatialfuse"]``: the expression table's calibration record plus
          ``"modalities"`` (``{rna_key: "rna", msi_key: "msi"}``).

    Raises
    ------
    TypeError
        An input is not an AnnData.
    ValueError
        The barcodes differ or repeat, the spot positions disagree, or the keys are equal.
    """
    import mudata as md
    import pandas as pd

    check_adata(rna, "rna", reader="read_visium", need_x=False)
    check_adata(msi_spots, "msi_spots", reader="io.read_imzml + sf.tl.map_to_spots", need_x=False)
    if rna_key == msi_key or not rna_key or not msi_key:
        raise ValueError(
            f"rna_key and msi_key must be distinct names, got {rna_key!r}, {msi_key!r}"
        )
    for name, table in (("rna", rna), ("msi_spots", msi_spots)):
        if not table.obs_names.is_unique:
            dup = table.obs_names[table.obs_names.duplicated()][:3].tolist()
            raise ValueError(f"{name} has repeated barcodes (e.g. {dup})")
    barcodes = rna.obs_names
    if not barcodes.equals(msi_spots.obs_names):
        only_rna = barcodes.difference(msi_spots.obs_names)
        only_msi = msi_spots.obs_names.difference(barcodes)
        if len(only_rna) or len(only_msi):
            raise ValueError(
                "rna and msi_spots describe different spots: "
                f"{len(only_rna)} barcodes only in rna (e.g. {only_rna[:3].tolist()}), "
                f"{len(only_msi)} only in msi_spots (e.g. {only_msi[:3].tolist()}); map the MSI "
                "onto the same Visium table with sf.tl.map_to_spots(msi, visium, ...)"
            )
    rna_mod = rna.copy()
    msi_mod = msi_spots[barcodes].copy()
    _check_positions(rna_mod, msi_mod)

    for key in ("spatial", "spatial_um"):
        source = rna_mod if key in rna_mod.obsm else msi_mod
        if key in source.obsm:
            coords = np.array(source.obsm[key], dtype=np.float64, copy=True)
            rna_mod.obsm[key] = coords.copy()
            msi_mod.obsm[key] = coords.copy()
    images = rna_mod.uns.get("spatial", msi_mod.uns.get("spatial"))
    if images is not None:
        rna_mod.uns["spatial"] = copy.deepcopy(images)
        msi_mod.uns["spatial"] = copy.deepcopy(images)
    rna_mod.var["feature_types"] = FEATURE_TYPES["rna"]
    msi_mod.var["feature_types"] = FEATURE_TYPES["msi"]

    coverage = _msi_obs(msi_mod)
    for column in MSI_OBS:
        msi_mod.obs[column] = coverage[column].to_numpy()
        rna_mod.obs[column] = coverage[column].to_numpy()

    with md.set_options(pull_on_update=False), warnings.catch_warnings():
        # var names may repeat across modalities (a gene named like an ion); that is allowed
        warnings.simplefilter("ignore", UserWarning)
        mdata = md.MuData({rna_key: rna_mod, msi_key: msi_mod})
    obs = rna.obs.copy()
    for column in MSI_OBS:
        obs[column] = coverage[column].to_numpy()
    mdata.obs = pd.DataFrame(obs, index=mdata.obs_names)
    for key in ("spatial", "spatial_um"):
        if key in rna_mod.obsm:
            mdata.obsm[key] = np.array(rna_mod.obsm[key], copy=True)
    if images is not None:
        mdata.uns["spatial"] = copy.deepcopy(images)
    info = copy.deepcopy(dict(rna.uns.get("spatialfuse", {}) or {}))
    info["modalities"] = {rna_key: "rna", msi_key: "msi"}
    info.pop("modality", None)
    mdata.uns["spatialfuse"] = info
    return mdata


def concatenate_modalities(
    mdata: mudata.MuData,
    *,
    modalities: list[str] | None = None,
    layer: str | None = None,
) -> anndata.AnnData:
    """One spots × (genes + ions) AnnData from a joint table, e.g. for tools that take one table.

    Parameters
    ----------
    mdata
        A joint table from :func:`joint_table`.
    modalities
        Which modalities, in which order; default all of them in ``mdata.mod`` order.
    layer
        Take each modality's ``layers[layer]`` instead of ``X`` (a modality without it raises).

    Returns
    -------
    anndata.AnnData
        Spots in ``mdata``'s order. Slots written:

        - ``X``: the modalities' matrices side by side (sparse if any is sparse, a dask array if
          any is one; rows of spots without MSI keep their NaN);
        - ``var``: ``feature_types`` (``"Gene Expression"``, ``"Metabolite"``, or the modality
          name for other modalities), ``modality``, and each modality's own ``var`` columns;
          ``var_names`` made unique by prefixing ``"<modality>:"`` to names that occur in more
          than one modality;
        - ``obs``, ``obsm["spatial"]``, ``obsm["spatial_um"]``, ``uns["spatial"]``,
          ``uns["spatialfuse"]``: copied from ``mdata``.

    Raises
    ------
    TypeError
        ``mdata`` is not a MuData.
    ValueError
        An unknown modality or a missing layer.
    """
    import anndata as ad
    import pandas as pd
    from scipy import sparse

    _check_mudata(mdata)
    names = list(mdata.mod) if modalities is None else list(modalities)
    unknown = [m for m in names if m not in mdata.mod]
    if unknown or not names:
        raise ValueError(f"unknown modalities {unknown}; mdata has {list(mdata.mod)}")
    kinds = dict((mdata.uns.get("spatialfuse", {}) or {}).get("modalities", {}) or {})
    mats, vars_ = [], []
    counts = pd.Series(
        np.concatenate([mdata.mod[m].var_names.to_numpy() for m in names])
    ).value_counts()
    for m in names:
        mod = mdata.mod[m]
        if not mod.obs_names.equals(mdata.obs_names):
            mod = mod[mdata.obs_names]
        if layer is not None and layer not in mod.layers:
            raise ValueError(f"modality {m!r} has no layer {layer!r}")
        mats.append(mod.layers[layer] if layer is not None else mod.X)
        var = mod.var.copy()
        var["feature_types"] = FEATURE_TYPES.get(kinds.get(m, m), m)
        var["modality"] = m
        var.index = [f"{m}:{v}" if counts[v] > 1 else v for v in mod.var_names]
        vars_.append(var)

    if any(type(x).__module__.split(".")[0] == "dask" for x in mats):
        import dask.array as da

        X = da.concatenate(
            [da.asarray(x.toarray() if sparse.issparse(x) else x) for x in mats], axis=1
        )
    elif any(sparse.issparse(x) for x in mats):
        X = sparse.hstack([sparse.csr_matrix(x) for x in mats], format="csr")
    else:
        dtype = np.result_type(*[np.asarray(x).dtype for x in mats])
        X = np.concatenate([np.asarray(x, dtype=dtype) for x in mats], axis=1)
    var = _writable(pd.concat(vars_, axis=0))
    var["feature_types"] = pd.Categorical(var["feature_types"])
    out = ad.AnnData(X=X, obs=mdata.obs.copy(), var=var)
    for key in ("spatial", "spatial_um"):
        if key in mdata.obsm:
            out.obsm[key] = np.array(mdata.obsm[key], copy=True)
    for key in ("spatial", "spatialfuse"):
        if key in mdata.uns:
            out.uns[key] = copy.deepcopy(mdata.uns[key])
    return out


# -------------------------------------------------------------------------------------------------


def _writable(frame: pd.DataFrame) -> pd.DataFrame:
    """Give columns that only one modality has a dtype h5ad can store.

    Concatenating, e.g., RNA's boolean ``highly_variable`` with MSI rows that lack it yields an
    object column of booleans and NaN, which anndata refuses to write; such columns become
    nullable booleans, nullable floats or categoricals.
    """
    import pandas as pd

    for name in frame.columns:
        column = frame[name]
        if column.dtype != object:
            continue
        present = column.dropna()
        if present.map(lambda v: isinstance(v, bool | np.bool_)).all():
            frame[name] = pd.array(column.where(column.notna(), None), dtype="boolean")
        elif present.map(lambda v: isinstance(v, int | float | np.number)).all():
            frame[name] = pd.to_numeric(column, errors="coerce").astype("Float64")
        else:
            frame[name] = pd.Categorical(column.where(column.isna(), column.astype(str)))
    return frame


def _check_mudata(mdata) -> None:
    if not all(hasattr(mdata, attr) for attr in ("mod", "obs", "obsm", "obsp", "uns")):
        raise TypeError(
            f"mdata must be a MuData (as returned by sf.tl.joint_table), got {type(mdata).__name__}"
        )


def _check_positions(rna, msi) -> None:
    """Both tables must place each spot at the same position (same Visium frame)."""
    for key in ("spatial_um", "spatial"):
        if key in rna.obsm and key in msi.obsm:
            a = np.asarray(rna.obsm[key], dtype=np.float64)
            b = np.asarray(msi.obsm[key], dtype=np.float64)
            if a.shape != b.shape or not np.allclose(a, b, rtol=1e-6, atol=1e-6, equal_nan=True):
                worst = float(np.nanmax(np.abs(a - b))) if a.shape == b.shape else float("nan")
                raise ValueError(
                    f"rna and msi_spots place the same barcodes at different obsm[{key!r}] "
                    f"positions (largest difference {worst:g}); were they mapped onto another "
                    "Visium table?"
                )
            return


def _msi_obs(msi):
    """``has_msi``, ``msi_coverage``, ``n_msi_pixels`` of each spot (derived when absent)."""
    import pandas as pd

    from spatialfuse.core.adata import finite_rows

    obs = msi.obs
    out = pd.DataFrame(index=msi.obs_names)
    if "has_msi" in obs:
        out["has_msi"] = obs["has_msi"].to_numpy(dtype=bool)
    else:
        out["has_msi"] = finite_rows(msi.X) if msi.n_vars else np.zeros(msi.n_obs, dtype=bool)
    out["msi_coverage"] = (
        obs["msi_coverage"].to_numpy(dtype=np.float64)
        if "msi_coverage" in obs
        else np.where(out["has_msi"], np.nan, 0.0)
    )
    out["n_msi_pixels"] = (
        obs["n_msi_pixels"].to_numpy(dtype=np.int64)
        if "n_msi_pixels" in obs
        else np.full(msi.n_obs, -1, dtype=np.int64)
    )
    return out
