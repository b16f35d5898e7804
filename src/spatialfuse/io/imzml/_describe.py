"""A human summary of an imzML file."""

from __future__ import annotations

from spatialfuse.io.imzml._reader import ImzMLReader


def _size(nbytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1024 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""


def describe_imzml(reader: ImzMLReader) -> str:
    """Summarise an open :class:`ImzMLReader`: files, spectra, grid, pixel size, m/z, types.

    Returns
    -------
    str
        One line per item, as ``spatialfuse info`` prints it.
    """
    rows, cols = reader.grid_shape
    x0, y0 = reader.grid_origin
    size = reader.pixel_size_um
    coords = reader.coordinates
    lines = [
        f"file:        {reader.path} ({_size(reader.path.stat().st_size)})",
        f"binary:      {reader.ibd_path.name} ({_size(reader.ibd_path.stat().st_size)}), "
        f"UUID {reader.uuid or 'not declared'}",
        f"mode:        {reader.mode}",
        f"spectra:     {reader.n_spectra:,} on a {cols} × {rows} grid (x × y) starting at "
        f"({x0}, {y0}); {reader.n_spectra / max(rows * cols, 1):.0%} of the grid filled",
    ]
    if len(coords) and (coords[:, 2] != coords[0, 2]).any():
        lines.append(f"z positions: {sorted(set(coords[:, 2].tolist()))}")
    if size is None:
        lines.append("pixel size:  not stated in the file (give pixel_size_um= when reading)")
    else:
        lines.append(
            f"pixel size:  {size[0]:g} × {size[1]:g} µm (x × y); extent "
            f"{cols * size[0] / 1000:.3g} × {rows * size[1] / 1000:.3g} mm"
        )
    low, high = reader.mz_range()
    lengths = reader.peak_counts
    lines += [
        f"m/z range:   {low:.4f} – {high:.4f}",
        f"points:      {int(lengths.min()) if lengths.size else 0:,} – "
        f"{int(lengths.max()) if lengths.size else 0:,} per spectrum",
        f"data types:  m/z {reader.mz_dtype}, intensity {reader.intensity_dtype}, "
        f"compression {reader.compression}",
    ]
    return "\n".join(lines)
