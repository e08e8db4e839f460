"""Pre-training image lists (paper §3.2, App. B, App. C): VGG-Face (all of VGGFace2), its random
1M subset, Large-Scale-Face (VGGFace2 + 300W-LP + IMDb-Face + AffectNet + WiderFace) and
Flickr-Face, each written as one absolute image path per line for `pretrain.train`
(with a PATH.sha256 sidecar, common.subsample.save_keys format).

    python -m pretrain.curate.lists vggface2 --root R [--split all] --out L
    python -m pretrain.curate.lists vggface2-1m --root R [--size 1000000 --seed 0] --out L [--keys-out K]
    python -m pretrain.curate.lists widerface --root R --crops DIR --out L
    python -m pretrain.curate.lists large-scale-face --vggface2 R --300w-lp R --imdb-face R --affectnet R \\
        --widerface R --widerface-crops DIR --out L
    python -m pretrain.curate.lists flickr-face --crops DIR [--kept dedup/kept.txt] --out L
    python -m pretrain.curate.lists folder --root R --out L

Layouts read (research/anchors_recog_au_emotion.md §2, §5.1; anchors_landmarks_3d.md §4):
VGGFace2 `meta/{train,test}_list.txt` or `{train,test}.txt` with `n000002/0001_01.jpg` lines
under `train/`, `test/` (else the folders are walked); "Full VGG-Face denotes the entirety of
VGGFace2" (App. B), so --split all (train + test, 9131 identities) is the default. AffectNet:
`Manually_Annotated_file_lists/training.csv` rows with face_width > 0, images under
`Manually_Annotated_Images/`; the validation split is left out because the emotion task is
evaluated on it. 300W-LP: `{AFW,HELEN,IBUG,LFPW}[_Flip]/*.jpg` (it contains the 300W test images:
--exclude-300wlp IBUG,IBUG_Flip drops folders). IMDb-Face: every image under its root. WiderFace:
`wider_face_split/wider_face_{split}_bbx_gt.txt` (image path, face count, then one line per face
"x y w h blur expression illumination invalid occlusion pose"; a count of 0 is followed by one
dummy line) with images in `WIDER_{split}/images/`; faces with invalid=0 and a longer side of at
least --min-face px are cropped with the App. A.1 rule (256 px, face 190 px).
The images of the other sets are listed as released; to apply the detector crop to them too,
run pretrain.curate.crop on each root and list the crops with `folder`.
"""
import argparse
import csv
import json
from pathlib import Path

import numpy as np

from common.logger import log, progress
from pretrain.curate.image_io import IMAGE_EXTENSIONS, crop_face, list_images, read_rgb, write_image
from pretrain.curate.manifest import load_manifest

W300LP_FOLDERS = ("AFW", "HELEN", "IBUG", "LFPW", "AFW_Flip", "HELEN_Flip", "IBUG_Flip", "LFPW_Flip")


def _need_dir(path, what):
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: folder not found: {path}")
    return path


def vggface2_keys(root, split="all"):
    """Sorted keys '<split>/<identity>/<image>.jpg' of VGGFace2, from its list files or folders."""
    root = _need_dir(root, "VGGFace2 root")
    keys = []
    for part in (("train", "test") if split == "all" else (split,)):
        names = [root / "meta" / f"{part}_list.txt", root / "meta" / f"{part}.txt",
                 root / f"{part}_list.txt", root / f"{part}.txt"]
        listed = next((p for p in names if p.is_file()), None)
        if listed is not None:
            with open(listed, encoding="utf-8") as f:
                rel = [ln.strip() for ln in f if ln.strip()]
            bad = next((i for i, r in enumerate(rel, 1) if r.startswith("/") or ".." in r.split("/")), None)
            if bad:
                raise ValueError(f"{listed}:{bad}: not a relative image path: {rel[bad - 1]!r}")
        else:
            rel = list_images(_need_dir(root / part, f"VGGFace2 {part} (no {names[0].name} either)"))
        keys += [f"{part}/{r}" for r in rel]
    if not keys:
        raise ValueError(f"{root}: no VGGFace2 images found for split {split!r}")
    return sorted(keys)


def w300lp_images(root, exclude=()):
    root = _need_dir(root, "300W-LP root")
    folders = [root / d for d in W300LP_FOLDERS if d not in exclude and (root / d).is_dir()]
    if not folders:
        raise FileNotFoundError(f"{root}: none of the 300W-LP folders {W300LP_FOLDERS}")
    return sorted(str(f / r) for f in folders for r in list_images(f))


def affectnet_images(root):
    """Training-split images of AffectNet (Manually_Annotated_file_lists/training.csv)."""
    root = _need_dir(root, "AffectNet root")
    table = root / "Manually_Annotated_file_lists" / "training.csv"
    if not table.is_file():
        raise FileNotFoundError(f"AffectNet list not found: {table}")
    out = []
    with open(table, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        header = next(rows, [])
        if "subDirectory_filePath" not in header or "face_width" not in header:
            raise ValueError(f"{table}:1: header lacks subDirectory_filePath / face_width: {header[:6]}")
        col_path, col_w = header.index("subDirectory_filePath"), header.index("face_width")
        for line, row in enumerate(rows, 2):
            try:
                if float(row[col_w]) > 0:
                    out.append(str(root / "Manually_Annotated_Images" / row[col_path]))
            except (IndexError, ValueError):
                raise ValueError(f"{table}:{line}: malformed row {row[:5]}") from None
    return sorted(out)


def parse_widerface(path):
    """[(relative image path, (n, 10) int array)] from a wider_face_*_bbx_gt.txt file."""
    with open(path, encoding="utf-8") as f:
        lines = [ln.strip() for ln in f]
    out, i = [], 0
    while i < len(lines):
        name = lines[i]
        if not name:
            i += 1
            continue
        if name.startswith("/") or ".." in name.split("/") or not name.lower().endswith(IMAGE_EXTENSIONS):
            raise ValueError(f"{path}:{i + 1}: expected a relative image path, got {name!r}")
        try:
            n = int(lines[i + 1])
            rows = [[int(float(v)) for v in lines[j].split()] for j in range(i + 2, i + 2 + max(n, 1))]
        except (IndexError, ValueError):
            raise ValueError(f"{path}:{i + 2}: expected a face count and {name}'s face lines") from None
        bad = next((j for j, r in enumerate(rows) if len(r) != 10), None)
        if bad is not None:
            raise ValueError(f"{path}:{i + 3 + bad}: a face line has 10 numbers, got {len(rows[bad])}")
        out.append((name, np.array(rows[:n], dtype=np.int64).reshape(n, 10)))
        i += 2 + max(n, 1)
    return out


def widerface_crops(root, crops, split="train", min_face=40.0, out_size=256, face_size=190):
    """Crop the annotated faces (invalid = 0, longer side >= min_face) -> sorted crop paths."""
    root, crops = _need_dir(root, "WiderFace root"), Path(crops)
    table = root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt"
    if not table.is_file():
        raise FileNotFoundError(f"WiderFace annotations not found: {table}")
    images = root / f"WIDER_{split}" / "images"
    paths, unreadable = [], 0
    for name, faces in progress(parse_widerface(table), desc="widerface"):
        boxes = np.concatenate([faces[:, :2], faces[:, :2] + faces[:, 2:4]], 1).astype(np.float64)
        keep = np.flatnonzero((faces[:, 7] == 0) & (faces[:, 2:4].max(1) >= min_face))
        targets = [crops / f"{Path(name).with_suffix('').as_posix()}_{k}.jpg" for k in keep]
        todo = [(k, t) for k, t in zip(keep, targets) if not t.is_file()]
        img = read_rgb(images / name) if todo else None
        if todo and img is None:
            unreadable += 1
            continue
        for k, target in todo:
            write_image(target, crop_face(img, boxes[k], out_size, face_size)[0])
        paths += [str(t) for t in targets]
    if unreadable:
        log(f"widerface: {unreadable} unreadable images skipped")
    return sorted(paths)


def flickr_face_crops(crops, kept=None):
    """Crop paths recorded in a crop manifest, optionally only those in a dedup kept list."""
    crops = _need_dir(crops, "crop folder")
    paths = sorted(str(crops / f["crop"]) for r in load_manifest(crops / "manifest.jsonl") for f in r.get("faces", []))
    if kept is not None:
        with open(kept, encoding="utf-8") as f:
            keep = {str(Path(ln.strip()).resolve()) for ln in f if ln.strip()}
        paths = [p for p in paths if str(Path(p).resolve()) in keep]
    return paths


def write_list(out, sources: dict):
    """Concatenate the sources' paths (in the given order) into one list file; returns a summary."""
    from common.subsample import save_keys
    paths = [str(Path(p).resolve()) for ps in sources.values() for p in ps]
    if not paths:
        raise ValueError("the list would be empty")
    digest = save_keys(out, paths)
    summary = {"list": str(out), "count": len(paths), "sha256": digest, "sources": {k: len(v) for k, v in sources.items()}}
    log(f"wrote {out}: {summary['sources']}")
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    cmds = {name: sub.add_parser(name) for name in
            ("vggface2", "vggface2-1m", "widerface", "large-scale-face", "flickr-face", "folder")}
    for c in cmds.values():
        c.add_argument("--out", required=True, help="list file to write")
    for name in ("vggface2", "vggface2-1m", "widerface", "folder"):
        cmds[name].add_argument("--root", required=True)
    for name in ("vggface2", "vggface2-1m"):
        cmds[name].add_argument("--split", choices=("all", "train", "test"), default="all")
    cmds["vggface2-1m"].add_argument("--size", type=int, default=1_000_000)
    cmds["vggface2-1m"].add_argument("--seed", type=int, default=0)
    cmds["vggface2-1m"].add_argument("--keys-out", help="subset keys file (default: OUT + .keys)")
    for name in ("widerface", "large-scale-face"):
        cmds[name].add_argument("--min-face", type=float, default=40.0)
    cmds["widerface"].add_argument("--crops", required=True, help="folder for the face crops")
    lsf = cmds["large-scale-face"]
    for flag in ("--vggface2", "--300w-lp", "--imdb-face", "--affectnet", "--widerface", "--widerface-crops"):
        lsf.add_argument(flag, required=True)
    lsf.add_argument("--exclude-300wlp", default="", help="comma list of 300W-LP folders to leave out")
    cmds["flickr-face"].add_argument("--crops", required=True, help="output folder of pretrain.curate.crop")
    cmds["flickr-face"].add_argument("--kept", help="kept.txt of pretrain.curate.dedup")
    a = p.parse_args(argv)
    try:
        if a.cmd in ("vggface2", "vggface2-1m"):
            keys = vggface2_keys(a.root, a.split)
            if a.cmd == "vggface2-1m":
                from common.subsample import save_keys, subset_keys
                keys = subset_keys(keys, min(1.0, a.size / len(keys)), a.seed)
                save_keys(a.keys_out or f"{a.out}.keys", keys)
            sources = {"vggface2": [str(Path(a.root) / k) for k in keys]}
        elif a.cmd == "widerface":
            sources = {"widerface": widerface_crops(a.root, a.crops, min_face=a.min_face)}
        elif a.cmd == "large-scale-face":
            sources = {"vggface2": [str(Path(a.vggface2) / k) for k in vggface2_keys(a.vggface2)],
                       "300w-lp": w300lp_images(a.__dict__["300w_lp"], [s for s in a.exclude_300wlp.split(",") if s]),
                       "imdb-face": [str(Path(a.imdb_face) / r) for r in list_images(a.imdb_face)],
                       "affectnet": affectnet_images(a.affectnet),
                       "widerface": widerface_crops(a.widerface, a.widerface_crops, min_face=a.min_face)}
        elif a.cmd == "flickr-face":
            sources = {"flickr-face": flickr_face_crops(a.crops, a.kept)}
        else:
            sources = {"folder": [str(Path(a.root) / r) for r in list_images(a.root)]}
        summary = write_list(a.out, sources)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"lists {a.cmd}: {err}") from None
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
