"""Face mesh topology and ground-truth vertices of 300W-LP / AFLW2000-3D (paper §5.5; BFM as in 3DDFA / face3d).

One loader, two file layouts (shared/research/anchors_landmarks_3d.md §4.1-4.2):

- ``BFM.mat`` as distributed for 3DDFA / face3d (the user supplies it; it is licensed): a struct
  ``model`` with ``shapeMU`` (3N x 1, xyz interleaved per vertex), ``shapePC`` (3N x 199),
  ``expMU`` (3N x 1), ``expPC`` (3N x 29), ``tri`` (3 x F, 1-based), ``kpt_ind`` (68, 1-based);
  N = 53,215. face3d ``morphable_model/load.py`` uses ``shapeMU + expMU`` as the mean.
- ``mesh_topology.mat`` of the synthetic benchmark (common/synthetic/writers/face3d.py):
  ``mean_shape`` (3 x V), ``tri`` (F x 3, 1-based), ``kpt_ind`` (1 x 68, 1-based), ``sym_perm``;
  its ``.mat`` samples store the posed mesh directly as ``vertices`` (3 x V, image frame).

Ground truth from BFM parameters (face3d ``examples/8_generate_posmap_300WLP.py``): vertices =
mean + shapePC @ Shape_Para + expPC @ Exp_Para, reshaped to (N, 3); ``Pose_Para`` = [pitch, yaw,
roll (radians), tx, ty, tz, s]; R = Rx(pitch) Ry(yaw) Rz(roll) with face3d's
``angle2matrix_3ddfa`` signs; v' = s v R^T + t; image y = H - y' - 1 (0-based, y down).
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError


@dataclass(frozen=True)
class MeshTopology:
    """Template vertices (V, 3), triangles (F, 3) 0-based, the 68 iBUG landmark vertex indices."""
    vertices: np.ndarray
    faces: np.ndarray
    landmark_ids: np.ndarray
    source: str

    @property
    def n_vertices(self):
        return len(self.vertices)


@dataclass(frozen=True)
class BFM:
    """Linear face model: mean (3N,), shape basis (3N, S), expression basis (3N, E)."""
    mean: np.ndarray
    shape_pc: np.ndarray
    exp_pc: np.ndarray

    def model_vertices(self, shape_para, exp_para):
        """(N, 3) float64 model-space vertices for the given coefficients."""
        shape_para = np.asarray(shape_para, dtype=np.float64).reshape(-1)
        exp_para = np.asarray(exp_para, dtype=np.float64).reshape(-1)
        if len(shape_para) != self.shape_pc.shape[1] or len(exp_para) != self.exp_pc.shape[1]:
            raise ValueError(f"BFM has {self.shape_pc.shape[1]} shape and {self.exp_pc.shape[1]} "
                             f"expression coefficients; got {len(shape_para)} and {len(exp_para)}")
        # float32 products (the bases are float32: a float64 vector would copy the 3N x 199 basis)
        flat = self.mean + self.shape_pc @ shape_para.astype(np.float32) + self.exp_pc @ exp_para.astype(np.float32)
        return flat.reshape(-1, 3)                  # xyz interleaved == reshape(3, N, order="F").T


def _to_indices(array, count, name, path):
    """1-based MATLAB indices (any 1-D / 2-D layout) -> 0-based int64 array checked against count."""
    idx = np.asarray(array, dtype=np.int64) - 1
    if idx.size == 0 or idx.min() < 0 or idx.max() >= count:
        raise ValueError(f"{path}: {name} indices out of range for {count} vertices")
    return idx


def _faces(tri, count, path):
    tri = np.asarray(tri)
    if tri.ndim != 2 or 3 not in tri.shape:
        raise ValueError(f"{path}: 'tri' must be 3 x F or F x 3, got shape {tri.shape}")
    faces = tri.T if tri.shape[0] == 3 and tri.shape[1] != 3 else tri
    return _to_indices(faces, count, "tri", path).reshape(-1, 3)


def _read_mat(path):
    try:
        return scipy.io.loadmat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"mesh file not found: {path}") from None
    except (MatReadError, ValueError, NotImplementedError, OSError) as e:
        raise ValueError(f"{path}: unreadable .mat file (MATLAB v7.3 files must be re-saved as "
                         f"v7 or earlier): {e}") from None


def load_mesh_model(path):
    """(MeshTopology, BFM or None) from a face3d/3DDFA ``BFM.mat`` or a ``mesh_topology.mat``."""
    path = str(path)
    mat = _read_mat(path)
    if "model" in mat:
        model = mat["model"][0, 0]
        fields = model.dtype.names or ()
        missing = [k for k in ("shapeMU", "shapePC", "expPC", "tri", "kpt_ind") if k not in fields]
        if missing:
            raise ValueError(f"{path}: BFM struct 'model' lacks fields {missing} (has {list(fields)})")
        mean = np.asarray(model["shapeMU"], dtype=np.float64).reshape(-1)
        if "expMU" in fields:
            mean = mean + np.asarray(model["expMU"], dtype=np.float64).reshape(-1)
        if mean.size % 3:
            raise ValueError(f"{path}: shapeMU has {mean.size} entries, not a multiple of 3")
        shape_pc = np.asarray(model["shapePC"], dtype=np.float32)
        exp_pc = np.asarray(model["expPC"], dtype=np.float32)
        if shape_pc.shape[0] != mean.size or exp_pc.shape[0] != mean.size:
            raise ValueError(f"{path}: shapePC {shape_pc.shape} / expPC {exp_pc.shape} do not match "
                             f"shapeMU ({mean.size} rows)")
        n = mean.size // 3
        topo = MeshTopology(mean.reshape(-1, 3), _faces(model["tri"], n, path),
                            _to_indices(model["kpt_ind"], n, "kpt_ind", path).reshape(-1), path)
        bfm = BFM(mean, shape_pc, exp_pc)
    elif "mean_shape" in mat and "tri" in mat and "kpt_ind" in mat:
        verts = np.asarray(mat["mean_shape"], dtype=np.float64)
        verts = verts.T if verts.shape[0] == 3 and verts.shape[1] != 3 else verts
        n = len(verts)
        topo = MeshTopology(verts, _faces(mat["tri"], n, path),
                            _to_indices(mat["kpt_ind"], n, "kpt_ind", path).reshape(-1), path)
        bfm = None
    else:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path}: neither a BFM file (struct 'model') nor a mesh topology file "
                         f"('mean_shape', 'tri', 'kpt_ind'); found keys {keys}")
    if len(topo.landmark_ids) != 68:
        raise ValueError(f"{path}: expected 68 landmark vertex indices, got {len(topo.landmark_ids)}")
    return topo, bfm


def rotation_3ddfa(pitch, yaw, roll):
    """face3d ``angle2matrix_3ddfa``: R = Rx Ry Rz with its sign convention (angles in radians)."""
    cx, sx, cy, sy, cz, sz = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cx, sx], [0, -sx, cx]])
    ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    rz = np.array([[cz, sz, 0], [-sz, cz, 0], [0, 0, 1]])
    return rx @ ry @ rz


def pose_to_image(vertices, pose_para, height):
    """Model-space (N, 3) -> image frame: s v R^T + t, then y = height + 1 - y, 3DDFA's flip (cleardusk/3DDFA
    ``utils/ddfa.py``: ``std_size + 1 - vertex[1]``), the convention of the AFLW2000-3D ``pt3d_68`` labels. face3d's
    ``height - y - 1`` put the mesh landmarks (+0.04, +2.07) px from ``pt3d_68`` on 16 real AFLW2000-3D files
    (YadiraF/PRNet ``TestImages/AFLW2000``): ~0.13 NME points at the median face size."""
    p = np.asarray(pose_para, dtype=np.float64).reshape(-1)
    if p.size != 7:
        raise ValueError(f"Pose_Para must hold 7 values (pitch, yaw, roll, tx, ty, tz, s), got {p.size}")
    out = p[6] * np.asarray(vertices, dtype=np.float64) @ rotation_3ddfa(*p[:3]).T + p[3:6]
    out[:, 1] = height + 1 - out[:, 1]
    return out


def sample_vertices(mat, height, bfm, n_vertices, source):
    """(V, 3) float64 ground-truth vertices in the image frame of one 300W-LP / AFLW2000-3D ``.mat``.

    A stored ``vertices`` field (3 x V, the synthetic sets) is used as is; otherwise the mesh is
    built from Shape_Para, Exp_Para and Pose_Para with the BFM.
    """
    if "vertices" in mat:
        v = np.asarray(mat["vertices"], dtype=np.float64)
        v = v.T if v.shape[0] == 3 and v.shape[1] != 3 else v
    else:
        missing = [k for k in ("Shape_Para", "Exp_Para", "Pose_Para") if k not in mat]
        if missing:
            raise ValueError(f"{source}: no 'vertices' and no {missing} to build them from")
        if bfm is None:
            raise ValueError(f"{source}: this sample holds BFM parameters; set model.topology to "
                             f"the face3d/3DDFA BFM.mat to turn them into vertices")
        v = pose_to_image(bfm.model_vertices(mat["Shape_Para"], mat["Exp_Para"]), mat["Pose_Para"], height)
    if v.shape != (n_vertices, 3):
        raise ValueError(f"{source}: mesh has shape {v.shape}, the topology expects ({n_vertices}, 3)")
    return v


def resolve(path, root):
    """``path`` as given when absolute or existing, else relative to the dataset ``root``."""
    p = Path(path).expanduser()
    return p if p.is_absolute() or p.exists() else Path(root) / p
