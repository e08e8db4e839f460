"""On-disk layouts of 300W-LP, AFLW2000-3D and Florence (paper §5.5, App. D.2; anchors_landmarks_3d.md §4).

- 300W-LP (§4.1): ``300W_LP/{AFW,HELEN,IBUG,LFPW}[_Flip]/<name>.jpg`` + ``<name>.mat``; 61,225
  samples and their mirrored copies, 122,450 images. The ``landmarks/`` and ``Code/`` folders of
  the release are not training samples and are ignored.
- AFLW2000-3D (§4.1, §4.3): ``AFLW2000/imageNNNNN.jpg`` + ``.mat`` (2,000 images), with
  ``pt3d_68`` (3 x 68), the protocol's ground truth, and ``Pose_Para``. The |yaw| bins come from
  ``Pose_Para`` or from a 3DDFA pose file, ``AFLW2000-3D-new.pose.npy`` of cleardusk/3DDFA
  ``test.configs/`` (float32 (2000,), |yaw| in degrees from the AFLW labels, in sorted image-name
  order; 1306 / 462 / 232 images per bin, "same as paper" in ``benchmark_aflw2000.py``). Its
  sibling ``AFLW2000-3D.pose.npy`` (the code's default, 1312 / 383 / 305) holds the signed yaw of
  ``Pose_Para`` in degrees (checked on 16 released ``.mat`` files of YadiraF/PRNet ``TestImages/AFLW2000``).
- Florence / MICC (§4.5, [unverified], no public evaluation code): neutral scans
  ``Florence/subject_NN/Model/frontal1/obj/*.obj`` and rendered test images
  ``Florence/renders/subject_NN/*.jpg`` + ``.mat``; the renders are the user's own (the community
  renders each scan at several yaw/pitch angles; recipe in reconstruction3d/README.md) and the
  synthetic benchmark writes this layout. A render's ``.mat`` needs ``pt3d_68`` (the crop box) and
  ``Pose_Para`` (the render pose); a mesh (``vertices`` / BFM parameters) is optional.
Keys are the image paths relative to the dataset folder, without extension (sorted).
"""
from pathlib import Path

import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError

FOLDERS = {"300wlp": "300W_LP", "aflw2000": "AFLW2000", "florence": "Florence"}
LP_SUBSETS = ("AFW", "AFW_Flip", "HELEN", "HELEN_Flip", "IBUG", "IBUG_Flip", "LFPW", "LFPW_Flip")
OFFICIAL_COUNTS = {"300wlp": 122450, "aflw2000": 2000, "florence": None}  # Florence: 53 subjects
POSE_FILE = "AFLW2000/AFLW2000-3D-new.pose.npy"   # 3DDFA's paper split of AFLW2000-3D, relative to data.root


def dataset_dir(name, root):
    """The dataset's folder: ``root/<FOLDER>`` (the data.root layout) or ``root`` itself."""
    if name not in FOLDERS:
        raise ValueError(f"unknown 3D dataset {name!r}; expected one of {sorted(FOLDERS)}")
    root = Path(root).expanduser()
    for candidate in (root / FOLDERS[name], root):
        if name == "300wlp" and any((candidate / s).is_dir() for s in LP_SUBSETS):
            return candidate
        if name == "aflw2000" and candidate.is_dir() and any(candidate.glob("image*.mat")):
            return candidate
        if name == "florence" and (candidate / "renders").is_dir():
            return candidate
    raise FileNotFoundError(f"{name}: no dataset found under {root} (expected {root / FOLDERS[name]} "
                            f"in the released layout; see reconstruction3d/formats.py)")


def _pairs(folder, pattern, base):
    """(key, image, mat) for every ``pattern`` image in ``folder`` that has a ``.mat`` beside it."""
    out = []
    for image in sorted(folder.glob(pattern)):
        mat = image.with_suffix(".mat")
        if mat.is_file():
            out.append((str(image.relative_to(base).with_suffix("")), str(image), str(mat)))
    return out


def list_samples(name, root):
    """Sorted (key, image path, mat path) triples of one dataset."""
    base = dataset_dir(name, root)
    if name == "300wlp":
        items = [p for s in LP_SUBSETS if (base / s).is_dir() for p in _pairs(base / s, "*.jpg", base)]
    elif name == "aflw2000":
        items = _pairs(base, "image*.jpg", base)
    else:
        items = [p for d in sorted((base / "renders").iterdir()) if d.is_dir()
                 for p in _pairs(d, "*.jpg", base)]
    if not items:
        raise FileNotFoundError(f"{base}: no image with a .mat annotation found")
    return sorted(items)


def read_mat(path):
    """The variables of a sample's ``.mat`` file; a clear error names an unreadable file."""
    try:
        return scipy.io.loadmat(path)
    except (MatReadError, ValueError, TypeError, OSError, NotImplementedError) as e:
        raise ValueError(f"{path}: unreadable .mat annotation: {e}") from None


def pose_degrees(mat, source):
    """(pitch, yaw, roll) in degrees from ``Pose_Para`` (radians in the files, §4.1)."""
    if "Pose_Para" not in mat:
        raise ValueError(f"{source}: no Pose_Para")
    p = np.asarray(mat["Pose_Para"], dtype=np.float64).reshape(-1)
    if p.size != 7:
        raise ValueError(f"{source}: Pose_Para has {p.size} values, expected 7")
    return np.degrees(p[:3])


def holds_mesh(mat):
    """True when a ``.mat`` holds a ground-truth mesh: stored ``vertices`` or BFM ``Shape_Para``."""
    return "vertices" in mat or "Shape_Para" in mat


def pt3d_68(mat, source):
    """(68, 3) float64 ``pt3d_68`` as stored (image x, y, z), or None when the file has none."""
    if "pt3d_68" not in mat:
        return None
    pts = np.asarray(mat["pt3d_68"], dtype=np.float64)
    pts = pts.T if pts.shape == (3, 68) else pts
    if pts.shape != (68, 3):
        raise ValueError(f"{source}: pt3d_68 has shape {pts.shape}, expected (3, 68)")
    return pts


def landmarks68(mat, vertices, landmark_ids, source, one_based=False):
    """(68, 3) image-frame landmarks: ``pt3d_68`` when the file has it (AFLW2000-3D's protocol
    ground truth; x, y minus 1 when ``one_based``, config ``data.pt3d_one_based``), else the mesh's
    68 landmark vertices."""
    pts = pt3d_68(mat, source)
    if pts is not None:
        return pts - [1.0, 1.0, 0.0] if one_based else pts   # a new array: the caller's mat is left as read
    if vertices is None:
        raise ValueError(f"{source}: no pt3d_68 and no mesh to take the 68 landmarks from")
    return np.asarray(vertices, dtype=np.float64)[landmark_ids]


def find_pose_file(path, root):
    """The AFLW2000-3D pose file ``path`` (absolute, relative to ``root`` = data.root, or by its name inside
    the AFLW2000 folder), or None when there is none."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path if path.is_file() else None
    candidates = [Path(root).expanduser() / path]
    try:
        candidates.append(dataset_dir("aflw2000", root) / path.name)
    except FileNotFoundError:
        pass
    return next((c for c in candidates if c.is_file()), None)


def read_pose_file(path, count):
    """(count,) |yaw| in degrees from a 3DDFA ``test.configs`` pose file (``.npy``, one yaw per image in
    sorted image-name order; cleardusk/3DDFA ``benchmark_aflw2000.py`` bins ``np.abs`` of it)."""
    try:
        yaw = np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable pose file: {e}") from None
    if yaw.shape != (count,):
        raise ValueError(f"{path}: pose file holds an array of shape {yaw.shape}, expected ({count},): one "
                         f"yaw per image in sorted name order")
    if not np.isfinite(yaw).all():
        raise ValueError(f"{path}: non-finite yaw at rows {np.flatnonzero(~np.isfinite(yaw))[:10].tolist()}")
    return np.abs(yaw)


def subject_of(key):
    """Florence subject folder of a render key ``renders/subject_NN/<name>``."""
    parts = Path(key).parts
    if len(parts) < 3 or parts[0] != "renders":
        raise ValueError(f"not a Florence render key: {key!r}")
    return parts[1]


def scan_path(root, subject):
    """The subject's neutral scan ``subject/Model/frontal1/obj/*.obj``."""
    folder = dataset_dir("florence", root) / subject / "Model" / "frontal1" / "obj"
    objs = sorted(folder.glob("*.obj"))
    if not objs:
        raise FileNotFoundError(f"Florence: no .obj scan in {folder}")
    return objs[0]


def read_obj_vertices(path):
    """(N, 3) float64 vertex positions of a Wavefront ``.obj`` (``v x y z [r g b]`` lines)."""
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.startswith("v "):
                parts = line.split()
                try:
                    rows.append([float(parts[1]), float(parts[2]), float(parts[3])])
                except (IndexError, ValueError):
                    raise ValueError(f"{path}:{number}: malformed vertex line {line.strip()!r}") from None
    if not rows:
        raise ValueError(f"{path}: no vertices")
    return np.asarray(rows, dtype=np.float64)
