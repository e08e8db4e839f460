"""Synthetic benchmark formats (issue 3): each miniature dataset read back by a small independent parser.

The parsers below follow shared/research (anchors_landmarks_3d.md §1, §4.1; anchors_recog_au_emotion.md
§1.1, §2, §3, §5.1), not the writer code: field counts, value ranges, 1-based conventions, landmarks
inside their images, split files, determinism and the deliberately corrupt pre-training files.
The ``synthetic_root`` fixture (tests/conftest.py) writes the tiny preset once per session.
"""
import csv
import glob
import json
import os

import numpy as np
import pytest
import scipy.io
from PIL import Image

def _size(path):
    with Image.open(path) as im:
        return im.size                                                     # (W, H)


def _inside(points, width, height, base=0.0):
    """All (x, y) within the image, for ``base``-based pixel coordinates."""
    points = np.asarray(points, dtype=np.float64)
    return bool(np.all(points >= base) and np.all(points[:, 0] <= width - 1 + base)
                and np.all(points[:, 1] <= height - 1 + base))


def _lines(path):
    with open(path) as f:
        return f.read().splitlines()


@pytest.fixture(scope="module")
def manifest(synthetic_root):
    with open(os.path.join(synthetic_root, "manifest.json")) as f:
        return json.load(f)


# ---------------------------------------------------------------- 300W (.pts, 1-based) + bounding boxes

def _read_pts(path):
    lines = _lines(path)
    assert lines[0] == "version: 1" and lines[1].split() == ["n_points:", "68"], path
    assert lines[2] == "{" and lines[-1] == "}" and len(lines) == 68 + 4, path
    return np.array([[float(v) for v in line.split()] for line in lines[3:-1]])


def test_300w_folders_pts_and_boxes(synthetic_root, manifest):
    root = os.path.join(synthetic_root, "300W")
    folders = ["afw", "helen/trainset", "lfpw/trainset", "helen/testset", "lfpw/testset", "ibug",
               "300W/01_Indoor", "300W/02_Outdoor"]
    images = {f: sorted(p for p in glob.glob(os.path.join(root, f, "*")) if p[-4:] in (".jpg", ".png"))
              for f in folders}
    assert all(images.values()), {f: len(v) for f, v in images.items()}
    assert os.path.exists(os.path.join(root, "ibug", "image_092 _01.jpg"))    # iBUG's file-name quirk
    assert all(p.endswith(".png") for p in images["lfpw/trainset"] + images["300W/01_Indoor"])
    splits = manifest["datasets"]["300w"]["splits"]
    assert splits["train"] == sum(len(images[f]) for f in folders[:3])
    assert manifest["datasets"]["300w"]["render_size"] == manifest["render_size"] == 96      # the tiny preset's
    assert splits["common"] == len(images["helen/testset"]) + len(images["lfpw/testset"])
    gt_boxes = {}
    for folder, paths in images.items():
        for path in paths:
            pts = _read_pts(os.path.splitext(path)[0] + ".pts")
            width, height = _size(path)
            assert _inside(pts, width, height, base=1.0), path
            assert np.linalg.norm(pts[36] - pts[45]) > 5.0                     # outer eye corners apart
            gt_boxes[os.path.basename(path)] = np.concatenate([pts.min(0), pts.max(0)])
    mat = scipy.io.loadmat(os.path.join(root, "Bounding Boxes", "bounding_boxes_helen_testset.mat"))
    entries = mat["bounding_boxes"][0]
    assert len(entries) == len(images["helen/testset"])
    for entry in entries:                                                  # SAN's load_box indexing
        name, detector, gt = entry[0][0][0][0], entry[0][0][1][0], entry[0][0][2][0]
        np.testing.assert_allclose(gt, gt_boxes[name], atol=1e-3)          # tight box of the .pts points
        assert detector.shape == (4,) and detector[2] > detector[0] and detector[3] > detector[1]
    ibug = scipy.io.loadmat(os.path.join(root, "Bounding Boxes", "bounding_boxes_ibug.mat"))["bounding_boxes"][0]
    assert len(ibug) > len(images["ibug"])                                 # also lists AFW entries, as the real file


# ---------------------------------------------------------------- WFLW

def test_wflw_annotation_lines_and_subsets(synthetic_root):
    root = os.path.join(synthetic_root, "WFLW")
    ann = os.path.join(root, "WFLW_annotations")
    test_lines = []
    for split in ("train", "test"):
        for line in _lines(os.path.join(ann, "list_98pt_rect_attr_train_test", f"list_98pt_rect_attr_{split}.txt")):
            fields = line.split(" ")
            assert len(fields) == 196 + 4 + 6 + 1
            pts = np.array(fields[:196], dtype=float).reshape(98, 2)
            rect = [int(v) for v in fields[196:200]]
            attrs = [int(v) for v in fields[200:206]]
            assert set(attrs) <= {0, 1} and rect[2] > rect[0] and rect[3] > rect[1]
            width, height = _size(os.path.join(root, "WFLW_images", fields[-1]))
            assert _inside(pts, width, height)
            assert np.linalg.norm(pts[60] - pts[72]) > 3.0                     # WFLW inter-ocular normaliser
            assert np.all(pts[96] >= pts[60:68].min(0)) and np.all(pts[96] <= pts[60:68].max(0))   # pupil in eye
            if split == "test":
                test_lines.append((fields[:196], attrs, fields[-1]))
    paths = [p for _, _, p in test_lines]
    assert len(paths) > len(set(paths))                                    # one test image holds two faces
    sub = os.path.join(ann, "list_98pt_test")
    assert len(_lines(os.path.join(sub, "list_98pt_test.txt"))) == len(test_lines)
    for k, name in enumerate(("largepose", "expression", "illumination", "makeup", "occlusion", "blur")):
        lines = _lines(os.path.join(sub, f"list_98pt_test_{name}.txt"))
        assert len(lines) == sum(attrs[k] for _, attrs, _ in test_lines) > 0
        assert all(len(line.split(" ")) == 197 for line in lines)


# ---------------------------------------------------------------- AFLW-19 (AFLWinfo_release.mat)

def test_aflw19_info_mat(synthetic_root, manifest):
    root = os.path.join(synthetic_root, "AFLW")
    info = scipy.io.loadmat(os.path.join(root, "AFLWinfo_release.mat"))
    n = info["bbox"].shape[0]
    assert info["bbox"].shape == (n, 4) and info["data"].shape == (n, 38) and info["mask_new"].shape == (n, 19)
    assert info["ra"].shape == (1, n) and info["nameList"].shape == (n, 1)
    ra = info["ra"].astype(int).reshape(-1) - 1                            # 1-based permutation
    assert sorted(ra.tolist()) == list(range(n))
    n_train = manifest["datasets"]["aflw19"]["train_count"]
    test = ra[n_train:]
    assert set(np.unique(info["mask_new"])) <= {0.0, 1.0}
    frontal = [i for i in test if np.all(info["mask_new"][i] == 1)]
    assert 0 < len(frontal) == manifest["datasets"]["aflw19"]["frontal_count"]
    for i in range(n):
        name = info["nameList"][i][0][0]                                   # FaRL: s[0][0] per row
        assert name.split("/")[0] in ("0", "2", "3")
        width, height = _size(os.path.join(root, "data", "flickr", name))
        landmarks = info["data"][i].reshape(2, 19).T
        assert _inside(landmarks, width, height)
        left, right, top, bottom = info["bbox"][i]
        assert left < right and top < bottom


# ---------------------------------------------------------------- COFW-68

def test_cofw68_annotations(synthetic_root):
    root = os.path.join(synthetic_root, "COFW68")
    cofw = scipy.io.loadmat(os.path.join(root, "COFW_test.mat"))
    n = cofw["IsT"].shape[0]
    bboxes = scipy.io.loadmat(os.path.join(root, "COFW68_Data", "cofw68_test_bboxes.mat"))["bboxes"]
    assert bboxes.shape == (n, 4) and np.all(bboxes[:, 2:] > 0) and cofw["phisT"].shape == (n, 87)
    assert set(np.unique(cofw["phisT"][:, 58:])) <= {0.0, 1.0}
    occluded = 0
    for i in range(1, n + 1):
        ann = scipy.io.loadmat(os.path.join(root, "COFW68_Data", "test_annotations", f"{i}_points.mat"))
        points, occ = ann["Points"], ann["Occ"]
        assert points.shape == (68, 2) and points.dtype == np.float64
        assert occ.shape == (1, 68) and occ.dtype == np.uint8 and set(np.unique(occ)) <= {0, 1}
        image = cofw["IsT"][i - 1][0]
        assert image.ndim == 2 and image.dtype == np.uint8                 # grayscale release
        assert _inside(points, image.shape[1], image.shape[0], base=1.0)   # Matlab 1-based
        occluded += int(occ.sum())
    assert occluded > 0


# ---------------------------------------------------------------- VGGFace2

def test_vggface2_lists_and_meta(synthetic_root, manifest):
    root = os.path.join(synthetic_root, "VGGFace2")
    ids = {}
    for split in ("train", "test"):
        listed = _lines(os.path.join(root, f"{split}_list.txt"))
        ids[split] = {p.split("/")[0] for p in listed}
        assert all(p.startswith("n") and len(p.split("/")[0]) == 7 and p[-7:] in ("_01.jpg", "_02.jpg")
                   for p in listed)
        with open(os.path.join(root, "bb_landmark", f"loose_bb_{split}.csv")) as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["NAME_ID", "X", "Y", "W", "H"] and len(rows) == len(listed) + 1
        with open(os.path.join(root, "bb_landmark", f"loose_landmark_{split}.csv")) as f:
            raw = f.read().splitlines()
        assert raw[0] == "NAME_ID," + ",".join(f"P{k}X,P{k}Y" for k in range(1, 6))
        assert all(line.startswith('"n') for line in raw[1:])                # NAME_ID is quoted
        for box_row, line in zip(rows[1:], csv.reader(raw[1:])):
            assert box_row[0] == line[0] and box_row[0] + ".jpg" in listed
            width, height = _size(os.path.join(root, split, box_row[0] + ".jpg"))
            x, y, w, h = map(float, box_row[1:])
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= width + 1 and y + h <= height + 1
            five = np.array(line[1:], dtype=float).reshape(5, 2)
            assert _inside(five, width, height) and five[0, 0] < five[1, 0]     # image-left eye first
    assert ids["train"] and ids["test"] and not ids["train"] & ids["test"]    # disjoint identities
    meta = _lines(os.path.join(root, "meta", "identity_meta.csv"))
    assert meta[0] == "Class_ID, Name, Sample_Num, Flag, Gender"
    for row in meta[1:]:
        cls, _, count, flag, gender = [v.strip() for v in row.split(", ")]
        split = "train" if flag == "1" else "test"
        assert cls in ids[split] and gender in ("m", "f")
        assert int(count) == len(os.listdir(os.path.join(root, split, cls)))
    assert len(ids["train"]) == manifest["datasets"]["vggface2"]["train_identities"]


# ---------------------------------------------------------------- IJB-B / IJB-C

@pytest.mark.parametrize("prefix", ["ijbb", "ijbc"])
def test_ijb_meta_files(synthetic_root, prefix):
    root = os.path.join(synthetic_root, prefix.upper())
    tid_mid = [line.split(" ") for line in _lines(os.path.join(root, "meta", f"{prefix}_face_tid_mid.txt"))]
    five = [line.split(" ") for line in _lines(os.path.join(root, "meta", f"{prefix}_name_5pts_score.txt"))]
    pairs = np.array([[int(v) for v in line.split(" ")]
                      for line in _lines(os.path.join(root, "meta", f"{prefix}_template_pair_label.txt"))])
    assert len(tid_mid) == len(five) and all(len(r) == 3 for r in tid_mid) and all(len(r) == 12 for r in five)
    assert [r[0] for r in tid_mid] == [r[0] for r in five] == [f"{i}.jpg" for i in range(1, len(five) + 1)]
    templates = {int(r[1]) for r in tid_mid}
    medias = [int(r[2]) for r in tid_mid]
    assert len(set(medias)) < len(medias)                                  # some media are videos
    for row in five:
        width, height = _size(os.path.join(root, "loose_crop", row[0]))
        assert _inside(np.array(row[1:11], dtype=float).reshape(5, 2), width, height)
        assert 0.0 <= float(row[11]) <= 1.0
    assert pairs.shape[1] == 3 and set(pairs[:, 2]) == {0, 1}
    assert set(pairs[:, :2].reshape(-1)) <= templates
    assert len({(a, b) for a, b, _ in pairs}) == len(pairs)


# ---------------------------------------------------------------- DISFA

def test_disfa_labels_and_frames(synthetic_root):
    root = os.path.join(synthetic_root, "DISFA")
    subjects = sorted(os.listdir(os.path.join(root, "ActionUnit_Labels")))
    expected = [f"SN{i:03d}" for i in list(range(1, 14)) + [16, 17, 18, 21] + list(range(23, 33))]
    assert subjects == expected
    total = 0
    for subject in subjects:
        frames = sorted(os.listdir(os.path.join(root, "Frames_LeftCamera", subject)))
        for au in (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26):
            rows = [line.split(",") for line in _lines(os.path.join(root, "ActionUnit_Labels", subject,
                                                                     f"{subject}_au{au}.txt"))]
            assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))   # frame = line index + 1
            values = [int(r[1]) for r in rows]
            assert all(0 <= v <= 5 for v in values) and len(rows) == len(frames)
            total += sum(values)
        assert sorted(int(f[:-4]) for f in frames) == list(range(1, len(frames) + 1))
    assert total > 0


# ---------------------------------------------------------------- BP4D (FERA 2015)

def test_bp4d_intensity_csvs(synthetic_root):
    """Frame files are the CSV's frame numbers zero-padded to one width per sequence folder (3 or 4 digits, as
    machanic/AU_R-CNN dataset_toolkit/scripts/AU_intensity_index_file_gen.py reads them); the face lies in a
    part of the larger frame (the tiny preset's canvas), with its true box in synthetic_face_boxes.csv."""
    root = os.path.join(synthetic_root, "BP4D")
    train = [f"F{i:03d}" for i in range(1, 24, 2)] + [f"M{i:03d}" for i in range(1, 18, 2)]
    devel = [f"F{i:03d}" for i in range(2, 23, 2)] + [f"M{i:03d}" for i in range(2, 19, 2)]
    assert sorted(os.listdir(os.path.join(root, "BP4D-training"))) == sorted(train + devel)
    with open(os.path.join(root, "synthetic_face_boxes.csv")) as f:
        truth = {row[0]: [float(v) for v in row[1:]] for row in csv.reader(f)}
    codes, widths = [], set()
    for au in (6, 10, 12, 14, 17):
        files = sorted(glob.glob(os.path.join(root, "AU Intensity Codes3.0", f"AU{au:02d}", f"*_AU{au:02d}.csv")))
        assert {os.path.basename(f)[:4] for f in files} == set(train + devel)
        for path in files:
            subject, task = os.path.basename(path).split("_")[:2]
            names = sorted(os.listdir(os.path.join(root, "BP4D-training", subject, task)))
            width = {len(n) - 4 for n in names}
            assert len(width) == 1 and width <= {3, 4} and all(n.endswith(".jpg") for n in names)
            widths |= width
            rows = [[int(v) for v in line.split(",")] for line in _lines(path)]
            assert [f"{frame:0{min(width)}d}.jpg" for frame, _ in rows] == names
            codes += [code for _, code in rows]
            x1, y1, x2, y2 = truth[f"{subject}/{task}/{rows[0][0]}"]
            width_px, height_px = _size(os.path.join(root, "BP4D-training", subject, task, names[0]))
            assert 0 <= x1 < x2 <= width_px and 0 <= y1 < y2 <= height_px and (x2 - x1) < 0.5 * width_px
    assert set(codes) <= {0, 1, 2, 3, 4, 5, 9} and 9 in codes and any(0 < c < 9 for c in codes)
    assert widths == {3, 4}


# ---------------------------------------------------------------- AffectNet

def test_affectnet_csvs(synthetic_root):
    root = os.path.join(synthetic_root, "AffectNet")
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
    for split in ("training", "validation"):
        lines = _lines(os.path.join(root, "Manually_Annotated_file_lists", f"{split}.csv"))
        assert lines[0] == header
        codes = []
        for line in lines[1:]:
            fields = line.split(",")
            assert len(fields) == 9
            path, x, y, w, h = fields[0], *map(int, fields[1:5])
            landmarks = np.array(fields[5].split(";"), dtype=float)
            expression, valence, arousal = int(fields[6]), float(fields[7]), float(fields[8])
            assert landmarks.shape == (136,) and 0 <= expression <= 10
            width, height = _size(os.path.join(root, "Manually_Annotated_Images", path))
            assert _inside(landmarks.reshape(68, 2), width, height)
            assert w > 0 and h > 0 and x + w <= width and y + h <= height
            if expression in (9, 10):
                assert valence == arousal == -2.0
            else:
                assert -1.0 <= valence <= 1.0 and -1.0 <= arousal <= 1.0
            codes.append(expression)
        assert {8, 9, 10} <= set(codes) and len(set(codes) & set(range(8))) >= 2


# ---------------------------------------------------------------- 300W-LP / AFLW2000-3D / Florence

def _topology(synthetic_root):
    return scipy.io.loadmat(os.path.join(synthetic_root, "face_model", "mesh_topology.mat"))


def test_300w_lp_mats_and_flips(synthetic_root):
    root = os.path.join(synthetic_root, "300W_LP")
    topo = _topology(synthetic_root)
    kpt = topo["kpt_ind"].reshape(-1) - 1                                  # 1-based, like the BFM's
    n_vertices = topo["mean_shape"].shape[1]
    assert topo["tri"].min() == 1 and topo["tri"].max() == n_vertices and kpt.shape == (68,)
    flip_perm = ([16 - i for i in range(17)] + [26 - i for i in range(10)] + [27, 28, 29, 30, 35, 34, 33, 32, 31]
                 + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40] + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
                 + [64, 63, 62, 61, 60, 67, 66, 65])                         # anchors §1.5
    for name in ("AFW", "HELEN", "LFPW", "IBUG"):
        mats = sorted(glob.glob(os.path.join(root, name, "*.mat")))
        assert mats and all(os.path.basename(m).startswith(name + "_") for m in mats)
        for path in mats:
            mat = scipy.io.loadmat(path)
            flip = scipy.io.loadmat(path.replace(f"{os.sep}{name}{os.sep}", f"{os.sep}{name}_Flip{os.sep}"))
            assert mat["pt2d"].shape == (2, 68) and mat["pt2d"].dtype == np.float64
            assert mat["Pose_Para"].shape == (1, 7) and mat["Pose_Para"].dtype == np.float32
            assert mat["vertices"].shape == (3, n_vertices) and mat["roi"].dtype == np.int16
            width, height = _size(path[:-4] + ".jpg")
            assert _inside(mat["pt2d"].T, width, height)
            np.testing.assert_allclose(mat["pt2d"], mat["vertices"][:2, kpt], atol=1e-3)
            mirrored = np.stack([width - 1 - mat["pt2d"][0], mat["pt2d"][1]])[:, flip_perm]
            np.testing.assert_allclose(flip["pt2d"], mirrored, atol=1e-3)
            np.testing.assert_allclose(flip["Pose_Para"][0, 1], -mat["Pose_Para"][0, 1], atol=1e-6)
            a = np.asarray(Image.open(path[:-4] + ".jpg").convert("L"), dtype=float)
            b = np.asarray(Image.open(path.replace(f"{os.sep}{name}{os.sep}", f"{os.sep}{name}_Flip{os.sep}")[:-4]
                                      + ".jpg").convert("L"), dtype=float)
            assert np.abs(a[:, ::-1] - b).mean() < 3.0                     # a mirror image (JPEG noise only)


def test_aflw2000_3d_mats(synthetic_root):
    root = os.path.join(synthetic_root, "AFLW2000")
    mats = sorted(glob.glob(os.path.join(root, "image*.mat")))
    yaws = []
    for path in mats:
        mat = scipy.io.loadmat(path)
        assert mat["pt2d"].shape == (2, 21) and mat["pt3d_68"].shape == (3, 68) and mat["pt3d_68"].dtype == np.float32
        assert np.all(mat["pt2d"][:, [12, 16]] == -1)                      # no ear points in the model
        width, height = _size(path[:-4] + ".jpg")
        assert _inside(mat["pt3d_68"][:2].T, width, height)
        present = mat["pt2d"][0] >= 0
        assert present.any() and _inside(mat["pt2d"][:, present].T, width, height)
        yaws.append(abs(np.degrees(mat["Pose_Para"][0, 1])))               # [pitch, yaw, roll, ...] radians
    bins = np.digitize(yaws, [30.0, 60.0], right=True)
    assert set(bins) == {0, 1, 2}                                          # all three protocol bins
    # 3DDFA test.configs format: float32 |yaw| in degrees, sorted image-name order; every 5th image moves bin
    pose_file = np.load(os.path.join(root, "AFLW2000-3D-new.pose.npy"), allow_pickle=False)
    assert pose_file.dtype == np.float32 and pose_file.shape == (len(mats),)
    moved = np.arange(len(mats)) % 5 == 4
    assert moved.any()
    np.testing.assert_allclose(pose_file[~moved], np.asarray(yaws)[~moved], atol=1e-3)
    assert (np.digitize(pose_file[moved], [30.0, 60.0], right=True) != bins[moved]).all()


def test_florence_meshes_and_renders(synthetic_root):
    root = os.path.join(synthetic_root, "Florence")
    topo = _topology(synthetic_root)
    objs = sorted(glob.glob(os.path.join(root, "subject_*", "Model", "frontal1", "obj", "*.obj")))
    assert len(objs) >= 2
    for path in objs:
        lines = _lines(path)
        verts = np.array([line.split()[1:] for line in lines if line.startswith("v ")], dtype=float)
        faces = np.array([line.split()[1:] for line in lines if line.startswith("f ")], dtype=int)
        assert verts.shape == topo["mean_shape"].T.shape and faces.shape == topo["tri"].shape
        assert faces.min() == 1 and faces.max() == len(verts)
        assert 80.0 < np.ptp(verts[:, 1]) < 500.0                          # millimetres, head-sized
        subject = os.path.basename(path)[:-4]
        renders = sorted(glob.glob(os.path.join(root, "renders", subject, "*.jpg")))
        assert renders
        for render in renders:
            mat = scipy.io.loadmat(render[:-4] + ".mat")
            yaw = int(os.path.basename(render).split("_yaw")[1].split("_")[0])
            assert abs(np.degrees(mat["Pose_Para"][0, 1]) - yaw) < 1e-3
            assert _inside(mat["pt3d_68"][:2].T, *_size(render))
            grey = np.asarray(Image.open(render).convert("L"), dtype=float)
            (x0, y0), (x1, y1) = mat["pt3d_68"][:2].min(1).astype(int), mat["pt3d_68"][:2].max(1).astype(int)
            assert grey[y0:y1 + 1, x0:x1 + 1].std() > 8.0                  # a face on the plain background


# ---------------------------------------------------------------- unlabelled pre-training folder

def test_unlabelled_folder_has_the_corrupt_files(synthetic_root):
    paths = sorted(glob.glob(os.path.join(synthetic_root, "unlabelled", "images", "*", "*.jpg")))
    unreadable, modes = [], []
    for path in paths:
        try:
            with Image.open(path) as im:
                im.load()
                modes.append(im.mode)
        except OSError:                                                    # PIL's UnidentifiedImageError too
            unreadable.append(path)
    assert len(unreadable) == 3                                            # zero-byte, truncated, not an image
    assert sum(os.path.getsize(p) == 0 for p in unreadable) == 1
    assert modes.count("L") == 1 and modes.count("CMYK") == 1 and modes.count("RGB") == len(paths) - 5


# ---------------------------------------------------------------- manifest, determinism

def test_manifest_lists_every_dataset(manifest, synthetic_root):
    assert manifest["preset"] == "tiny" and manifest["seed"] == 0 and manifest["complete"] is True
    for info in manifest["datasets"].values():
        assert os.path.isdir(os.path.join(synthetic_root, info["folder"])) and info["images"] > 0
    assert len(manifest["datasets"]) == 15


def _read_bytes(root, relative):
    with open(os.path.join(root, relative), "rb") as f:
        return f.read()


def test_same_seed_same_bytes_in_worker_processes(synthetic_root, tmp_path):
    """Re-writing a dataset in 2 worker processes reproduces the session's bytes (images inside
    COFW_test.mat, .mat annotations); seed 1 gives other bytes."""
    files = ["COFW68/COFW_test.mat", "COFW68/COFW68_Data/test_annotations/2_points.mat",
             "COFW68/COFW68_Data/cofw68_test_bboxes.mat"]
    from common.synthetic.writers.generate import generate
    again, other = tmp_path / "again", tmp_path / "other"
    generate(str(again), "tiny", 0, only=["cofw68"], workers=2)
    generate(str(other), "tiny", 1, only=["cofw68"], workers=1)
    for relative in files:
        assert _read_bytes(again, relative) == _read_bytes(synthetic_root, relative), relative
        assert _read_bytes(other, relative) != _read_bytes(synthetic_root, relative), relative
    assert json.loads((again / "manifest.json").read_text())["datasets"].keys() == {"cofw68"}


def test_refuses_to_overwrite_a_folder_it_did_not_write(tmp_path):
    from common.synthetic.writers.generate import generate
    (tmp_path / "AFLW").mkdir()
    (tmp_path / "AFLW" / "AFLWinfo_release.mat").write_bytes(b"the real file")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        generate(str(tmp_path), "tiny", 0, only=["aflw19"])
    assert (tmp_path / "AFLW" / "AFLWinfo_release.mat").read_bytes() == b"the real file"
    assert not (tmp_path / "manifest.json").exists()


# ---------------------------------------------------------------- derived markups (writer unit test)

@pytest.mark.parametrize("n_points", [98, 19, 29])
def test_derived_markups_commute_with_horizontal_flip(n_points):
    """Converting mirrored iBUG-68 points equals mirroring the converted points under each layout's
    flip permutation (common.landmark_schemes), so WFLW / AFLW / COFW labels stay left-right consistent."""
    from common.landmark_schemes import flip_permutation
    from common.synthetic.writers.markups import convert
    points = np.random.default_rng(0).normal(size=(68, 2))

    def mirror(p, n):
        return (p * [-1.0, 1.0])[flip_permutation(n)]
    np.testing.assert_allclose(convert(mirror(points, 68), n_points), mirror(convert(points, n_points), n_points),
                               atol=1e-12)
    np.testing.assert_allclose(convert(points + [3.0, -2.0], n_points), convert(points, n_points) + [3.0, -2.0])
