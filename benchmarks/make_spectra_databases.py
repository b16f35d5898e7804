"""Write the two small annotation databases of ``benchmarks/bench_spectra_real.py``.

Nothing is downloaded: every row is a molecular formula, and every mass is computed from it by
molmass (monoisotopic, the way ``sf.tl.annotate`` computes it); each row's ``source`` column says
where its formula came from.

- ``tests/data/spectra/lipids_by_class.csv``: glycerophospholipids, sphingolipids and glycerolipids
  as sum compositions (``PC(34:1)``), one formula per class and (carbons, double bonds) from the
  class's head-group rule, e.g. PC(C:D) = C(C+8) H(2C-2D+16) N O8 P (checked against PC(34:1) =
  C42H82NO8P, PE(38:4) = C43H78NO8P, SM(d34:1) = C39H79N2O6P, LPC(16:0) = C24H50NO7P,
  PA(34:1) = C37H71O8P, PG(34:1) = C40H77O10P, PS(36:1) = C42H80NO10P, PI(38:4) = C47H83O13P,
  TG(52:2) = C55H102O6, DG(34:1) = C37H70O5, Cer(d34:1) = C34H67NO3, HexCer(d34:1) =
  C40H77NO8, the textbook formulas of these species). Different classes can share a formula
  (PC(C:D) and PE(C+3:D)): the annotation then joins their names, as SpaMTP does.
- ``tests/data/spectra/metabolites_negative.csv``: 34 small metabolites and inorganic ions often
  seen in negative-mode MALDI of tissue (amino acids, organic acids, nucleobases and nucleosides,
  sugars, fatty acids, phosphate and chloride clusters), formulas of the named compounds as
  standard chemistry gives them (the ones HMDB lists for these names). Inorganic anions are
  listed as the neutral compound whose ``[M-H]-`` or ``[M+Cl]-`` they are: PO3- as
  metaphosphoric acid HPO3, H2PO4- as phosphoric acid, HSO4- as sulfuric acid, NaCl2- and KCl2-
  as ``[M+Cl]-`` of NaCl and KCl.

Usage::

    python benchmarks/make_spectra_databases.py
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "spectra"

#: class → (carbon offset, hydrogen offset, the rest of the formula, carbons, double bonds).
#: Formula of class(C:D) = C(C + c) H(2C - 2D + h) + rest.
CLASSES = {
    "PC": (8, 16, "NO8P", range(28, 41), range(0, 7)),
    "PE": (5, 10, "NO8P", range(28, 41), range(0, 7)),
    "PA": (3, 5, "O8P", range(28, 41), range(0, 7)),
    "PG": (6, 11, "O10P", range(28, 41), range(0, 7)),
    "PS": (6, 10, "NO10P", range(28, 41), range(0, 7)),
    "PI": (9, 15, "O13P", range(28, 41), range(0, 7)),
    "LPC": (8, 18, "NO7P", range(14, 23), range(0, 7)),
    "LPE": (5, 12, "NO7P", range(14, 23), range(0, 7)),
    "SM": (5, 13, "N2O6P", range(30, 45), range(1, 4)),
    "Cer": (0, 1, "NO3", range(30, 45), range(1, 4)),
    "HexCer": (6, 11, "NO8", range(30, 45), range(1, 4)),
    "DG": (3, 4, "O5", range(28, 41), range(0, 7)),
    "TG": (3, 2, "O6", range(44, 59), range(0, 7)),
}

#: Checks of the rules against species whose formulas are textbook knowledge.
KNOWN = {
    ("PC", 34, 1): "C42H82NO8P",
    ("PE", 38, 4): "C43H78NO8P",
    ("SM", 34, 1): "C39H79N2O6P",
    ("LPC", 16, 0): "C24H50NO7P",
    ("PA", 34, 1): "C37H71O8P",
    ("PG", 34, 1): "C40H77O10P",
    ("PS", 36, 1): "C42H80NO10P",
    ("PI", 38, 4): "C47H83O13P",
    ("TG", 52, 2): "C55H102O6",
    ("DG", 34, 1): "C37H70O5",
    ("Cer", 34, 1): "C34H67NO3",
    ("HexCer", 34, 1): "C40H77NO8",
}

#: name → formula of small metabolites (negative mode: [M-H]-, [M+Cl]-).
METABOLITES = {
    "lactic acid": "C3H6O3",
    "fumaric acid": "C4H4O4",
    "succinic acid": "C4H6O4",
    "malic acid": "C4H6O5",
    "citric acid": "C6H8O7",
    "ascorbic acid": "C6H8O6",
    "gluconic acid": "C6H12O7",
    "glucose": "C6H12O6",
    "taurine": "C2H7NO3S",
    "hypotaurine": "C2H7NO2S",
    "aspartic acid": "C4H7NO4",
    "glutamic acid": "C5H9NO4",
    "glutamine": "C5H10N2O3",
    "N-acetylaspartic acid": "C6H9NO5",
    "adenine": "C5H5N5",
    "hypoxanthine": "C5H4N4O",
    "xanthine": "C5H4N4O2",
    "uric acid": "C5H4N4O3",
    "uridine": "C9H12N2O6",
    "cytidine": "C9H13N3O5",
    "inosine": "C10H12N4O5",
    "glycerophosphoethanolamine": "C5H14NO6P",
    "glycerol 3-phosphate": "C3H9O6P",
    "palmitic acid": "C16H32O2",
    "linoleic acid": "C18H32O2",
    "oleic acid": "C18H34O2",
    "stearic acid": "C18H36O2",
    "arachidonic acid": "C20H32O2",
    "docosahexaenoic acid": "C22H32O2",
    "metaphosphoric acid (PO3- as [M-H]-)": "HPO3",
    "phosphoric acid (H2PO4- as [M-H]-)": "H3PO4",
    "sulfuric acid (HSO4- as [M-H]-)": "H2SO4",
    "sodium chloride (NaCl2- as [M+Cl]-)": "NaCl",
    "potassium chloride (KCl2- as [M+Cl]-)": "KCl",
}


def _formula(cls: str, carbons: int, double_bonds: int) -> str:
    c, h, rest, _, _ = CLASSES[cls]
    return f"C{carbons + c}H{2 * carbons - 2 * double_bonds + h}{rest}"


def lipids() -> pd.DataFrame:
    from molmass import Formula

    for (cls, carbons, double_bonds), formula in KNOWN.items():
        made = _formula(cls, carbons, double_bonds)
        assert Formula(made).formula == Formula(formula).formula, (cls, made, formula)
    rows = []
    for cls, (c, h, rest, carbon_range, bond_range) in CLASSES.items():
        prefix = "d" if cls in ("SM", "Cer", "HexCer") else ""
        for carbons in carbon_range:
            for double_bonds in bond_range:
                formula = _formula(cls, carbons, double_bonds)
                rows.append(
                    {
                        "name": f"{cls}({prefix}{carbons}:{double_bonds})",
                        "formula": formula,
                        "mass": round(Formula(formula).isotope.mass, 6),
                        "source": (
                            f"class rule {cls}(C:D) = C(C+{c})H(2C-2D+{h}){rest}; mass by molmass"
                        ),
                    }
                )
    return pd.DataFrame(rows)


def metabolites() -> pd.DataFrame:
    from molmass import Formula

    rows = [
        {
            "name": name,
            "formula": formula,
            "mass": round(Formula(formula).isotope.mass, 6),
            "source": "formula of the named compound (standard chemistry); mass by molmass",
        }
        for name, formula in METABOLITES.items()
    ]
    return pd.DataFrame(rows)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    lipids().to_csv(OUT / "lipids_by_class.csv", index=False)
    metabolites().to_csv(OUT / "metabolites_negative.csv", index=False)
    for name in ("lipids_by_class.csv", "metabolites_negative.csv"):
        frame = pd.read_csv(OUT / name)
        print(f"{OUT / name}: {len(frame)} rows")


if __name__ == "__main__":
    main()
