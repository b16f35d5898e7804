"""METASPACE annotation exports: the layout METASPACE writes, and a real export.

The fixture below is written the way METASPACE's web app writes its "Export to CSV"
(metaspace2020/metaspace: ``webapp/src/lib/formatCsvRow.ts`` quotes every non-null cell and
leaves null ones empty, ``csvExportHeader()`` writes two ``#`` lines; ``AnnotationTable.vue``'s
``startExport`` writes the columns below and the adduct as ``"M" +`` the engine's adduct, so
``"M+K"``, ``"M-H"`` and ``"M[M]+"``; ``docs/csv_export.md``: lists joined by ``", "``).
The real export (``../shared/data/metaspace/islamr3_liza_export``, see its SOURCE.txt) was
re-saved by a spreadsheet before it was published: no ``#`` lines, cells quoted only where
needed, ``TRUE``/``FALSE``; its values are METASPACE's.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import spatialfuse as sf
from spatialfuse._ions import adduct_shift
from spatialfuse.tl._annotate import read_database

#: Columns of the newest AnnotationTable.vue export with chemMod, neutralLoss, off-sample,
#: isomer and isobar columns switched on (the web app's features flags).
COLUMNS = [
    "group", "datasetName", "datasetId", "formula", "adduct", "chemMod", "neutralLoss", "ion",
    "mz", "msm", "fdr", "rhoSpatial", "rhoSpectral", "rhoChaos", "moleculeNames", "moleculeIds",
    "minIntensity", "maxIntensity", "totalIntensity", "offSample", "rawOffSampleProb",
    "isomerIons", "isobarIons",
]  # fmt: skip


def _row(cells) -> str:
    """formatCsvRow: every non-null cell quoted (quotes doubled), null cells empty."""
    out = []
    for cell in cells:
        out.append("" if cell is None else '"' + str(cell).replace('"', '""') + '"')
    return ",".join(out) + "\n"


def _export(path) -> None:
    rows = [
        # PC(34:1) as [M+K]+, two molecules in the lists; the group is null (no group)
        [None, "bladder 1", "2026-01-01_00h00m00s", "C42H82NO8P", "M+K", "", "",
         "C42H82NO8P+K+", 798.540963, 0.931, 0.05, 0.95, 0.99, 0.99, "PC(34:1), PC(16:0/18:1)",
         "HMDB0007972, HMDB0000564", 0, 1200.5, 98000.0, "false", 0.01, "", ""],
        # glucose with a neutral loss of water, as [M+H]+ (C6H11O5+, 163.0601)
        [None, "bladder 1", "2026-01-01_00h00m00s", "C6H12O6", "M+H", "", "-H2O",
         "C6H12O6-H2O+H+", 163.060096, 0.41, 0.2, 0.5, 0.9, 0.98,
         "D-Glucose, D-Galactose", "HMDB0000122, HMDB0000143", 0, 10.0, 500.0, "false", 0.2,
         "", ""],
        # choline, a pre-charged molecule: METASPACE's "[M]+", exported as "M[M]+"; a name
        # with a comma (its ", " turned into "," by formatCsvTextArray)
        [None, "bladder 1", "2026-01-01_00h00m00s", "C5H14NO", "M[M]+", "", "", "C5H14NO+",
         104.106990, 0.88, 0.1, 0.9, 0.99, 0.99, "Choline,free base", "HMDB0000097", 0, 40.0,
         3000.0, "true", 0.7, "", ""],
    ]  # fmt: skip
    text = "# Generated at 2026-01-01 12:00:00. For help see https://bit.ly/3Bzs6Z4\n"
    text += "# URL: https://metaspace2020.org/annotations?ds=2026-01-01_00h00m00s\n"
    text += _row(COLUMNS) + "".join(_row(r) for r in rows)
    path.write_text(text, encoding="utf-8")


def _table(mz, polarity="positive"):
    var = pd.DataFrame({"mz": np.asarray(mz, dtype=float)}, index=[f"f{i}" for i in range(len(mz))])
    adata = ad.AnnData(np.ones((3, len(mz)), np.float32), var=var)
    return adata, polarity


def test_an_export_in_metaspaces_own_layout(tmp_path):
    """Fixture written exactly as the web app writes it: quoted cells, two # lines, M+K,
    M[M]+, a neutral loss, molecule lists; each row keeps its own adduct and modification."""
    path = tmp_path / "metaspace_annotations.csv"
    _export(path)
    db = read_database(path)
    assert db["adduct"].tolist() == ["[M+K]+"] * 2 + ["[M+H]+"] * 2 + ["[M]+"]
    assert db["name"].tolist() == [
        "PC(34:1)", "PC(16:0/18:1)", "D-Glucose", "D-Galactose", "Choline,free base",
    ]  # fmt: skip
    assert db["moleculeIds"].tolist()[:2] == ["HMDB0007972", "HMDB0000564"]
    assert db["formula"].tolist()[2] == "C6H10O5"  # the water loss applied to the formula
    # every ion's m/z is the export's own mz column (within 0.1 ppm)
    ion = db["mass"] + np.array([adduct_shift(a)[0] for a in db["adduct"]])
    exported = np.array([798.540963, 798.540963, 163.060096, 163.060096, 104.106990])
    assert np.abs((ion - exported) / exported * 1e6).max() < 0.1

    adata, polarity = _table([798.5410 * (1 + 1e-6), 163.0601, 104.1070, 760.5851])
    sf.tl.annotate(adata, path, ppm=3, polarity=polarity)
    var = adata.var
    assert var["annotation_name"].tolist() == [
        "PC(16:0/18:1); PC(34:1)", "D-Galactose; D-Glucose", "Choline,free base", "",
    ]  # fmt: skip
    assert var["annotation_adduct"].tolist() == ["[M+K]+", "[M+H]+", "[M]+", ""]
    assert abs(var["annotation_ppm"].iloc[0] - 1.0) < 0.2
    candidates = adata.uns["annotation"]["candidates"]
    assert set(candidates["ion"]) == {"C42H82NO8P+K+", "C6H12O6-H2O+H+", "C5H14NO+"}
    assert sorted(set(candidates["fdr"])) == [0.05, 0.1, 0.2]


def test_a_byte_order_mark_before_the_comment_lines(tmp_path):
    """Spreadsheets save UTF-8 with a BOM: the # lines are still skipped."""
    path = tmp_path / "metaspace_annotations.csv"
    _export(path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert len(read_database(path)) == 5


def test_an_unknown_modifier_or_adduct_names_the_row(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('"formula","adduct","neutralLoss","moleculeNames"\n"C6H12O6","M+H","-Xq","x"\n')
    with pytest.raises(sf.errors.FileFormatError, match="row 1"):
        read_database(path)


@pytest.fixture(scope="module")
def real_export(shared_data):
    path = shared_data / "metaspace" / "islamr3_liza_export" / "metaspace_annotations.csv"
    if not path.exists():
        pytest.skip(f"{path} not in the shared data")
    return path


def test_the_real_export_reads_with_metaspaces_own_ion_masses(real_export):
    """1,906 ions of a real negative-mode export (re-saved: no # lines, TRUE/FALSE): every
    ion's m/z from the formula and adduct is within 0.6 ppm of METASPACE's mz column (a
    constant 0.039 mDa apart), and the molecule lists become one row per molecule."""
    raw = pd.read_csv(real_export)
    db = read_database(real_export)
    assert len(raw) == 1906
    assert set(db["adduct"]) == {"[M-H]-", "[M+Cl]-"}
    assert len(db) == sum(len(str(v).split(", ")) for v in raw["moleculeNames"]) == 7084
    ions = db.drop_duplicates("ion").set_index("ion")
    ion_mz = ions["mass"] + np.array([adduct_shift(a)[0] for a in ions["adduct"]])
    exported = raw.set_index("ion")["mz"].reindex(ion_mz.index)
    ppm = (ion_mz - exported) / exported * 1e6
    assert len(ppm) == 1906 and np.abs(ppm).max() < 0.6
    glucose = db[db["ion"] == "C6H12O6+Cl-"]
    assert {"D-Glucose", "D-Mannose", "myo-Inositol"} <= set(glucose["name"])
    assert (glucose["fdr"] == 0.05).all()


def test_annotating_the_exports_own_mz_gives_back_its_formulas(real_export):
    """Features at the export's 1,885 distinct m/z, annotated against the export within
    3 ppm: the best formula is the exported one for ≥ 99 % of them; the rest are the exact
    isobars METASPACE itself lists (a Cl-containing formula as [M-H]- and the formula less
    HCl as [M+Cl]- are the same ion)."""
    raw = pd.read_csv(real_export)
    unique = raw.drop_duplicates("mz").sort_values("mz").reset_index(drop=True)
    adata, _ = _table(unique["mz"].to_numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sf.tl.annotate(adata, real_export, ppm=3, polarity="negative")
    same = adata.var["annotation_formula"].to_numpy() == unique["formula"].to_numpy()
    assert len(unique) == 1885 and same.mean() >= 0.99
    assert adata.var["annotation_ppm"].abs().max() < 0.6
