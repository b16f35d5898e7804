"""Controlled-vocabulary accessions used by imzML, looked up by accession, never by name."""

from __future__ import annotations

import numpy as np

CONTINUOUS = "IMS:1000030"
PROCESSED = "IMS:1000031"
CENTROID = "MS:1000127"
PROFILE = "MS:1000128"
UUID = "IMS:1000080"
CHECKSUM_MD5 = "IMS:1000090"
CHECKSUM_SHA1 = "IMS:1000091"
PIXEL_SIZE_X = "IMS:1000046"
PIXEL_SIZE_Y = "IMS:1000047"
MAX_COUNT_X = "IMS:1000042"
MAX_COUNT_Y = "IMS:1000043"
POSITION_X = "IMS:1000050"
POSITION_Y = "IMS:1000051"
POSITION_Z = "IMS:1000052"
EXTERNAL_DATA = "IMS:1000101"
EXTERNAL_OFFSET = "IMS:1000102"
EXTERNAL_ARRAY_LENGTH = "IMS:1000103"
EXTERNAL_ENCODED_LENGTH = "IMS:1000104"

#: Accessions whose values are read: given twice with different values, a file is ambiguous.
VALUED = frozenset(
    {
        UUID,
        CHECKSUM_MD5,
        CHECKSUM_SHA1,
        PIXEL_SIZE_X,
        PIXEL_SIZE_Y,
        POSITION_X,
        POSITION_Y,
        POSITION_Z,
        EXTERNAL_OFFSET,
        EXTERNAL_ARRAY_LENGTH,
        EXTERNAL_ENCODED_LENGTH,
    }
)

MZ_ARRAY = "MS:1000514"
INTENSITY_ARRAY = "MS:1000515"

NO_COMPRESSION = "MS:1000576"
ZLIB_COMPRESSION = "MS:1000574"

#: Accession -> numpy dtype (little-endian, as imzML prescribes).
DTYPES: dict[str, np.dtype] = {
    "MS:1000521": np.dtype("<f4"),  # 32-bit float
    "MS:1000523": np.dtype("<f8"),  # 64-bit float
    "MS:1000519": np.dtype("<i4"),  # 32-bit integer
    "MS:1000522": np.dtype("<i8"),  # 64-bit integer
    "IMS:1000141": np.dtype("<i4"),  # 32-bit integer (imzML)
    "IMS:1000142": np.dtype("<i8"),  # 64-bit integer (imzML)
}

#: Compression accessions that are recognised; anything else is refused by name.
COMPRESSIONS = {NO_COMPRESSION: "none", ZLIB_COMPRESSION: "zlib"}
UNSUPPORTED_COMPRESSIONS = {
    "MS:1002312": "MS-Numpress linear prediction",
    "MS:1002313": "MS-Numpress positive integer",
    "MS:1002314": "MS-Numpress short logged float",
    "MS:1002746": "MS-Numpress linear + zlib",
    "MS:1002747": "MS-Numpress positive integer + zlib",
    "MS:1002748": "MS-Numpress short logged float + zlib",
}

#: Unit accessions for lengths, as a factor to micrometres.
LENGTH_UNITS_TO_UM = {
    "UO:0000017": 1.0,  # micrometre
    "UO:0000018": 1e-3,  # nanometre
    "UO:0000016": 1e3,  # millimetre
    "UO:0000008": 1e6,  # metre
    "UO:0000015": 1e4,  # centimetre
}
LENGTH_UNIT_NAMES_TO_UM = {
    "micrometer": 1.0,
    "micrometre": 1.0,
    "um": 1.0,
    "µm": 1.0,
    "nanometer": 1e-3,
    "nanometre": 1e-3,
    "nm": 1e-3,
    "millimeter": 1e3,
    "millimetre": 1e3,
    "mm": 1e3,
}
