"""scripts/collect.py: the paper's Tables 1-12 in their layout, ours beside the published numbers (fabricated runs)."""
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import collect  # noqa: E402
import collect_tables  # noqa: E402
from au_intensity import tables as AT  # noqa: E402
from face_recognition import table4 as FT  # noqa: E402
from landmarks import tables as LT  # noqa: E402


def write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


def rows_of(text):
    """Markdown table rows (list of cells) of every table in ``text``, headers and separators included."""
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]


def test_table6_layout_cells_and_differences(tmp_path):
    runs = tmp_path / "runs"
    write(f"{runs}/landmarks/300w_0.02_scratch/metrics.json", {"splits": {"private": {"nme_io": 12.0}}})
    write(f"{runs}/landmarks/aflw19_1.0_ours_vggf/metrics.json", {"splits": {"full": {"nme_diag": 1.6}}})
    write(f"{runs}/landmarks/cofw68_0.1_imagenet/metrics.json", {"splits": {"test": {"nme_io": 5.32}}})
    rows = rows_of(collect.collect(6, [str(runs)]))
    assert rows[0] == ["Data amount", "Pretrain. method", "300W", "COFW", "WFLW", "AFLW"]
    body = rows[2:]
    assert len(body) == 15 + 2                                            # 3 regimes x 5 inits + 2 SOTA rows
    assert [r[1] for r in body[:5]] == ["Scratch", "Sup. (ImageNet)", "Sup. (VGG-F)", "Ours (Flickr-F)",
                                        "Ours (VGG-F)"]
    assert [r[0] for r in body[::5][:3]] == ["100%", "10%", "2%"]
    scratch_2 = body[10]
    assert scratch_2[:3] == ["2%", "Scratch", "12.00 / 13.52 (-1.52)"]      # ours 12.0 vs paper 13.52
    assert scratch_2[3] == "– / 14.70"                                     # not run: no difference
    assert body[4][5] == "1.60 / 1.55 (+0.05)"                             # AFLW NME_diag, 100 % Ours (VGG-F)
    assert body[6][3] == "5.32 / 5.32 (+0.00)"                             # COFW-68 from the 300W model
    assert body[15][1] == "SOTA (from paper) [76]" and body[16][2] == "– / –"


def test_table7_and_table3_read_pooled_disfa_and_bp4d(tmp_path):
    runs = tmp_path / "runs"
    write(f"{runs}/au/disfa_vggf_ours_finetune_0.01/metrics.json", {"icc_mean": 0.5})
    write(f"{runs}/au/bp4d_imagenet_linear_1.0/metrics.json", {"icc_mean": 0.6})
    write(f"{runs}/au/disfa_300w_sup_finetune_0.1/metrics.json", {"icc_mean": 0.4})
    rows = rows_of(collect.collect(7, [str(runs)]))[2:]
    assert len(rows) == 15 + 1
    assert rows[14][:3] == ["1%", "Ours (VGG-F)", "0.500 / 0.560 (-0.060)"]
    assert rows[1][5] == "0.600 / 0.587 (+0.013)"
    assert rows[0][3] == "– / –"                                           # Scratch has no linear probe
    t3 = rows_of(collect.collect(3, [str(runs / "au")]))                    # a task folder given directly
    assert t3[0] == ["Data amount", "Sup. (ImageNet)", "Sup. (VGG-F)", "Sup. (300W)"]
    assert t3[3] == ["10%", "– / 0.556", "– / 0.560", "0.400 / 0.460 (-0.060)"]


def test_table4_keeps_garbled_paper_values_as_printed(tmp_path):
    runs = tmp_path / "runs"
    tar = {far: 0.5 for far in FT.FARS}
    write(f"{runs}/table4/fr_vggf_2/metrics.json", {"ijbb": {"tar_at_far": tar}, "ijbc": {"tar_at_far": tar}})
    rows = rows_of(collect.collect(4, [str(runs)]))
    assert len(rows[0]) == 2 + 10 and len(rows) == 2 + 12 + 1
    vggf_2 = rows[2 + 11]
    assert vggf_2[:4] == ["2%", "Ours (VGG-F)", "0.500 / 0.333 (+0.167)", "0.500 / 0.547 (-0.047)"]
    assert rows[-1][7] == "– / 0.0.767"                                    # printed as in the paper


def test_tables_1_and_2_read_every_task(tmp_path):
    runs = tmp_path / "runs"
    write(f"{runs}/landmarks/300w_0.02_moco_vggf/metrics.json", {"splits": {"private": {"nme_io": 11.0}}})
    write(f"{runs}/au/disfa_vggf_swav256_finetune_0.01/metrics.json", {"icc_mean": 0.55})
    write(f"{runs}/landmarks/300w_0.1_ours_lsf/metrics.json", {"splits": {"private": {"nme_io": 4.4}}})
    write(f"{runs}/au/disfa_flickr_ours_finetune_0.01/metrics.json", {"icc_mean": 0.57})
    write(f"{runs}/table4/fr_vggfsmall_100/metrics.json", {"ijbb": {"tar_at_far": {"0.0001": 0.9}}})
    t1 = rows_of(collect.collect(1, [str(runs)]))
    assert t1[0] == ["Method", "300W NME (%)", "DISFA ICC"] and [r[0] for r in t1[2:]] == [
        "Scratch", "MoCov2", "SwAV", "SwAV (256)"]
    assert t1[3][1] == "11.00 / 11.90 (-0.90)" and t1[5][2] == "0.550 / 0.549 (+0.001)"
    t2 = rows_of(collect.collect(2, [str(runs / "landmarks"), str(runs / "au"), str(runs / "table4")]))[2:]
    assert len(t2) == 12 and [r[1] for r in t2[:4]] == ["VGG-Face-small", "VGG-Face", "Large-Scale-Face",
                                                        "Flickr-Face"]
    assert t2[0][4] == "0.900 / 0.910 (-0.010)"
    assert t2[6][2] == "4.40 / 4.30 (+0.10)" and t2[11][3] == "0.570 / 0.571 (-0.001)"


def test_long_format_names_table_row_and_column(tmp_path):
    write(f"{tmp_path}/r3d/300wlp_0.1_ours_vggf/metrics.json", {"aflw2000": {"nme68": {"mean": 3.9}}})
    text = collect.collect(9, [str(tmp_path)], long=True)
    assert "| Table 9, row 10%, column Ours (VGG-F) | 3.72 | 3.90 | +0.18 |" in text
    assert "| Table 9, row 2%, column Scratch | 7.11 | – | – |" in text


@pytest.mark.parametrize("number,n_rows", [(1, 4), (2, 12), (3, 3), (4, 13), (6, 17), (7, 16), (8, 5), (9, 3),
                                           (10, 5), (11, 5), (12, 12)])
def test_every_table_renders_the_paper_rows_without_runs(tmp_path, number, n_rows):
    rows = rows_of(collect.collect(number, [str(tmp_path)]))
    assert len(rows) == 2 + n_rows
    assert all(len(r) == len(rows[0]) for r in rows)


def test_table5_has_one_block_per_dataset(tmp_path):
    text = collect.collect(5, [str(tmp_path)])
    headers = [r for r in rows_of(text) if r[0] in ("300W", "AFLW", "WFLW")]
    assert headers == [["300W", "100%", "10%", "1.5%"], ["AFLW", "100%", "10%", "1%"], ["WFLW", "100%", "10%", "0.7%"]]


def test_table1_and_2_paper_numbers_agree_with_the_task_tables():
    """Rows of Tables 1-2 that the paper prints again elsewhere must match the task modules' copies."""
    pn = collect_tables.paper_numbers()
    t1 = pn["table1"]["rows"]
    assert t1["Scratch"] == [round(LT.TABLE6["0.02"]["scratch"][0], 1), AT.PAPER_T7["1%"]["Scratch"][0]]
    assert t1["SwAV"] == [LT.TABLE6["0.02"]["ours_vggf"][0], AT.PAPER_T7["1%"]["Ours (VGG-F)"][0]]
    t2 = pn["table2"]["rows"]
    for regime, frac, au, fr in (("100%", "1.0", "100%", "100"), ("10%", "0.1", "10%", "10"),
                                 ("2%", "0.02", "1%", "2")):
        for row, lm, au_row, fr_init in (("VGG-Face", "ours_vggf", "Ours (VGG-F)", "vggf"),
                                         ("Flickr-Face", "ours_flickrf", "Ours (Flickr-F)", "flickr")):
            ijbb = float(FT.PAPER[(fr, fr_init)][0].split()[FT.FARS.index("0.0001")])
            assert t2[regime][row] == [LT.TABLE6[frac][lm][0], AT.PAPER_T7[au][au_row][0], ijbb]


def test_cli_writes_out_and_rejects_unknown_tables(tmp_path, capsys):
    out = tmp_path / "t9.md"
    collect.main(["--table", "9", str(tmp_path), "--out", str(out)])
    assert capsys.readouterr().out == out.read_text()
    with pytest.raises(SystemExit):
        collect.main(["--table", "13", str(tmp_path)])
