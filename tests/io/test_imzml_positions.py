"""An imzML whose spectra share grid positions is refused with the positions named."""

from __future__ import annotations

import re

import pytest
from imzml_factory import grid_coords, write_simple

import spatialfuse as sf
from spatialfuse.errors import FileFormatError


@pytest.mark.parametrize("validate", [False, True])
def test_spectra_sharing_a_position_are_refused_with_the_positions_named(tmp_path, validate):
    coords = grid_coords(4, 3)
    coords[5] = coords[2]  # (3, 1) twice: spectra 2 and 5
    coords[9] = coords[2]  # ... and a third time: spectrum 9
    coords[7] = coords[0]  # (1, 1): spectra 0 and 7
    truth = write_simple(tmp_path, coords=coords)
    with pytest.raises(FileFormatError) as info:
        sf.io.ImzMLReader(truth.imzml, validate=validate)
    message = str(info.value)
    assert str(truth.imzml) in message
    assert "2 grid positions hold more than one spectrum (3 spectra too many" in message
    # In file order of the first spectrum at each position, with every spectrum index.
    assert re.search(r"\(x=1, y=1\): spectra 0, 7; \(x=3, y=1\): spectra 2, 5, 9", message)
    with pytest.raises(FileFormatError, match="more than one spectrum"):
        sf.io.read_imzml(truth.imzml)


def test_distinct_positions_read_without_warning(tmp_path, recwarn):
    truth = write_simple(tmp_path, coords=grid_coords(4, 3))
    adata = sf.io.read_imzml(truth.imzml)
    assert adata.obs_names.is_unique and adata.n_obs == 12
    assert not [w for w in recwarn.list if "not unique" in str(w.message)]


def test_the_same_x_y_in_different_z_planes_is_not_a_repeat(tmp_path):
    coords = [(x, y, z) for z in (1, 2) for x, y in grid_coords(2, 2)]
    truth = write_simple(tmp_path, coords=coords)
    with sf.io.ImzMLReader(truth.imzml) as reader:
        assert reader.n_spectra == 8
