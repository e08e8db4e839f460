"""The paper's Tables 1-12 as grids of (ours, paper) cells, in the paper's row / column layout.

Paper numbers and run readers come from the task modules (landmarks.tables, au_intensity.tables,
emotion.tables, reconstruction3d.tables, face_recognition.table4); Tables 1 and 2, which no task
holds, come from scripts/paper_numbers.yaml. Run folders are those the scripts/tableN.sh make:
``landmarks/<dataset>_<fraction>_<method>``, ``au/<dataset>_<init>_<adaptation>_<fraction>``,
``emotion/affectnet_<init>_<fraction>``, ``r3d/300wlp_<fraction>_<method>``, ``table4/fr_<init>_<regime>``.
"""
import json
import os
from dataclasses import dataclass, field

import yaml

from au_intensity import tables as AT
from emotion import tables as ET
from face_recognition import table4 as FT
from landmarks import tables as LT
from reconstruction3d import tables as RT

PAPER_NUMBERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "paper_numbers.yaml")
SUBDIRS = {"landmarks": "landmarks", "au": "au", "emotion": "emotion", "r3d": "r3d", "fr": "table4"}


@dataclass
class Grid:
    """One table block: ``header`` = label columns then value columns; rows of (labels, [(ours, paper)])."""
    title: str
    header: list
    n_labels: int
    digits: list                      # decimals per value column
    rows: list = field(default_factory=list)


def paper_numbers():
    with open(PAPER_NUMBERS) as f:
        return yaml.safe_load(f)


def _icc(metrics):
    return None if metrics is None else metrics.get("icc_mean")


def _load(path):
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return text                   # a garbled printed value ("0.0.767") is shown as printed


# Table 1 / 2 run names: (landmarks method, AU init, face-recognition init) per row.
T1_RUNS = {"Scratch": ("scratch", "scratch"), "MoCov2": ("moco_vggf", "vggf_moco"),
           "SwAV": ("ours_vggf", "vggf_ours"), "SwAV (256)": ("swav256_vggf", "vggf_swav256")}
T2_RUNS = {"VGG-Face-small": ("ours_vggfsmall", "vggfsmall_ours", "vggfsmall"),
           "VGG-Face": ("ours_vggf", "vggf_ours", "vggf"),
           "Large-Scale-Face": ("ours_lsf", "lsf_ours", "lsf"),
           "Flickr-Face": ("ours_flickrf", "flickr_ours", "flickr")}
# Regime label -> (300W fraction, DISFA fraction label, IJB regime); DISFA's "2 %" is Table 7's 1 %.
T2_REGIMES = {"100%": ("1.0", "100%", "100"), "10%": ("0.1", "10%", "10"), "2%": ("0.02", "1%", "2")}


def table1(d):
    pn = paper_numbers()["table1"]
    g = Grid("Table 1: 2 % of 300W (NME %, test set) and DISFA (ICC)", ["Method", *pn["columns"]], 1, [2, 3])
    for name, paper in pn["rows"].items():
        lm, au = T1_RUNS[name]
        ours = [LT.run_value(d("landmarks"), "300w", "0.02", lm, "private", "nme_io"),
                _icc(AT.run_metrics(d("au"), "disfa", au, "finetune", "1%"))]
        g.rows.append(([name], list(zip(ours, paper))))
    return [g]


def table2(d):
    pn = paper_numbers()["table2"]
    g = Grid("Table 2: unsupervised pre-training data; 300W NME (%), DISFA ICC, IJB-B TAR@FAR=1e-4",
             ["Data amount", "Unsup. Data", *pn["columns"]], 2, [2, 3, 3])
    for regime, rows in pn["rows"].items():
        frac, au_frac, fr_regime = T2_REGIMES[regime]
        for name, paper in rows.items():
            lm, au, fr = T2_RUNS[name]
            ijbb = FT.read_ours(d("fr"), fr, fr_regime).get("ijbb")
            ours = [LT.run_value(d("landmarks"), "300w", frac, lm, "private", "nme_io"),
                    _icc(AT.run_metrics(d("au"), "disfa", au, "finetune", au_frac)),
                    None if ijbb is None else ijbb[FT.FARS.index("0.0001")]]
            g.rows.append(([regime, name], list(zip(ours, paper))))
    return [g]


def table3(d):
    names = list(AT.PAPER_T3["100%"])
    g = Grid("Table 3: DISFA ICC after supervised pre-training", ["Data amount", *names], 1, [3] * len(names))
    for frac, per in AT.PAPER_T3.items():
        g.rows.append(([frac], [(_icc(AT.run_metrics(d("au"), "disfa", AT.INITS[n], "finetune", frac)), per[n])
                                for n in names]))
    return [g]


def table4(d):
    header = [f"{b} {f}" for b in ("IJB-B", "IJB-C") for f in FT.FARS]
    g = Grid("Table 4: face recognition TAR at FAR on IJB-B / IJB-C", ["Data amount", "Pretrain. method", *header],
             2, [3] * len(header))
    for regime, regime_name in FT.REGIMES:
        for init, name in FT.METHODS:
            ours = FT.read_ours(d("fr"), init, regime)
            cells = []
            for bench, paper in zip(("ijbb", "ijbc"), FT.PAPER[(regime, init)]):
                values = ours.get(bench) or [None] * len(FT.FARS)
                cells += [(v, _float(p)) for v, p in zip(values, paper.split())]
            g.rows.append(([regime_name, name], cells))
    g.rows.append((["", "SOTA (from paper) [17]"], [(None, _float(p)) for row in FT.PAPER_SOTA for p in row.split()]))
    return [g]


def table5(d):
    grids = []
    for name, (fractions, (ds, split, key), rows) in LT.TABLE5.items():
        labels = [f"{float(f):.1%}".replace(".0%", "%") for f in fractions]
        g = Grid(f"Table 5 ({name}): few-shot NME (%)", [name, *labels], 1, [2] * len(fractions))
        for method, paper in rows:
            ours = [LT.run_value(d("landmarks"), ds, f, method, split, key) if method in LT.METHODS else None
                    for f in fractions]
            g.rows.append(([LT.METHODS.get(method, method)], list(zip(ours, paper))))
        grids.append(g)
    return grids


def table6(d):
    g = Grid("Table 6: landmark NME (%) (inter-ocular; AFLW NME_diag)", ["Data amount", "Pretrain. method",
                                                                      *LT.COLUMNS], 2, [2] * len(LT.COLUMNS))
    for frac, rows in LT.TABLE6.items():
        for method, paper in rows.items():
            ours = [LT.run_value(d("landmarks"), ds, frac, method, split, key) for ds, split, key in LT.COLUMNS.values()]
            g.rows.append(([f"{float(frac):.0%}", LT.METHODS[method]], list(zip(ours, paper))))
    for name, paper in LT.TABLE6_SOTA.items():
        g.rows.append((["", name], [(None, p) for p in paper]))
    return [g]


def table7(d):
    cols = [(ds, mode) for ds in ("disfa", "bp4d") for mode in ("finetune", "linear")]
    g = Grid("Table 7: AU intensity ICC", ["Data amount", "Pretrain. method", "DISFA finetune", "DISFA linear",
                                           "BP4D finetune", "BP4D linear"], 2, [3] * 4)
    for frac, per in AT.PAPER_T7.items():
        for name, paper in per.items():
            ours = [_icc(AT.run_metrics(d("au"), ds, AT.INITS[name], mode, frac)) for ds, mode in cols]
            g.rows.append(([frac, name], list(zip(ours, paper))))
    g.rows.append((["", "SOTA (from paper) [49]"], [(None, _float(p)) for p in AT.PAPER_T7_SOTA]))
    return [g]


def per_au(d, number, dataset, aus, paper_rows):
    g = Grid(f"Table {number}: per-AU ICC on {'DISFA' if dataset == 'disfa' else 'BP4D'}",
             ["Method", "Data amount", *(f"AU{a}" for a in aus), "Avg."], 2, [3] * (len(aus) + 1))
    for name, frac, values in paper_rows[:-1]:
        g.rows.append(([name, frac], [(None, v) for v in values]))
    name, frac, values = paper_rows[-1]
    for amount in ("1%", "2%", "6%"):
        m = AT.run_metrics(d("au"), dataset, "vggf_ours", "finetune", amount)
        if m is None and amount != "1%":
            continue
        ours = [None] * (len(aus) + 1) if m is None else [m["icc"].get(f"AU{a}") for a in aus] + [m["icc_mean"]]
        paper = values if amount == frac else [None] * len(ours)
        g.rows.append(([f"{name} (VGG-F)", amount], list(zip(ours, paper))))
    return [g]


def table9(d):
    names = list(RT.METHODS.values())
    g = Grid("Table 9: AFLW2000-3D NME (68 points, %); SOTA (from paper) [15]: 3.39", ["Data", *names], 1,
             [2] * len(names))
    for frac, label in RT.FRACTIONS.items():
        g.rows.append(([label], [(RT.run_value(d("r3d"), frac, m), RT.TABLE9[frac][m]) for m in RT.METHODS]))
    return [g]


def table12(d):
    header = ["Acc.", "V RMSE", "V SAGR", "V PCC", "V CCC", "A RMSE", "A SAGR", "A PCC", "A CCC"]
    g = Grid("Table 12: AffectNet", ["Data amount", "Init. method", *header], 2, [3] * len(header))
    for frac, per in ET.PAPER_T12.items():
        for name, paper in per.items():
            metrics = _load(os.path.join(d("emotion"), f"affectnet_{ET.INITS[name]}_{ET.FRACTIONS[frac]}",
                                         "metrics.json"))
            g.rows.append(([frac, name], list(zip(ET.ours_values(metrics), paper))))
    return [g]


TABLES = {1: table1, 2: table2, 3: table3, 4: table4, 5: table5, 6: table6, 7: table7,
          8: lambda d: per_au(d, 8, "bp4d", AT.BP4D_AUS, AT.PAPER_T8),
          9: table9,
          10: lambda d: per_au(d, 10, "disfa", AT.DISFA_AUS, AT.PAPER_T10),
          11: lambda d: per_au(d, 11, "bp4d", AT.BP4D_AUS, AT.PAPER_T8),
          12: table12}
