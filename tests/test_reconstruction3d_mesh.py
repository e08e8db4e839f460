"""3D reconstruction mesh machinery (paper §5.5): spirals, quadric decimation, up/down-sampling, spiral
decoder, BFM ground truth and rigid alignment, on small hand-built meshes."""
import numpy as np
import pytest
import scipy.io
import torch

from reconstruction3d import mesh_sampling, rigid
from reconstruction3d.decoder import SpiralConv, SpiralDecoder, sparse_pool, to_torch_sparse
from reconstruction3d.mesh_model import load_mesh_model, pose_to_image, sample_vertices
from reconstruction3d.spiral import one_rings, spiral_sequences


def grid_mesh(n):
    """n x n vertices on the unit square, two counter-clockwise triangles per cell (normal +z)."""
    ys, xs = np.mgrid[0:n, 0:n]
    v = np.stack([xs.ravel(), ys.ravel(), np.zeros(n * n)], 1) / (n - 1)
    i = (ys[:-1, :-1] * n + xs[:-1, :-1]).ravel()
    f = np.concatenate([np.stack([i, i + 1, i + n + 1], 1), np.stack([i, i + n + 1, i + n], 1)])
    return v, f


def icosphere(level):
    """Unit sphere by subdividing an icosahedron; faces counter-clockwise seen from outside."""
    t = (1 + 5 ** 0.5) / 2
    v = [np.array(p, float) for p in ([-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
                                      [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1])]
    v = [p / np.linalg.norm(p) for p in v]
    f = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
         [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11],
         [6, 2, 10], [8, 6, 7], [9, 8, 1]]
    for _ in range(level):
        mids, new = {}, []

        def mid(a, b):
            key = (min(a, b), max(a, b))
            if key not in mids:
                p = v[a] + v[b]
                v.append(p / np.linalg.norm(p))
                mids[key] = len(v) - 1
            return mids[key]
        for a, b, c in f:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            new += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        f = new
    return np.array(v), np.array(f)


def oriented_edges(faces):
    """Set of directed edges (a, b) of the faces' boundaries."""
    return {(int(t[k]), int(t[(k + 1) % 3])) for t in faces for k in range(3)}


def neighbours(faces, n):
    nb = [set() for _ in range(n)]
    for a, b in oriented_edges(faces):
        nb[a].add(b)
        nb[b].add(a)
    return nb


def test_one_ring_of_grid_vertices_follows_face_orientation():
    v, f = grid_mesh(5)
    rings = one_rings(f, len(v))
    edges = oriented_edges(f)
    centre = 2 * 5 + 2
    ring = rings[centre].tolist()
    assert sorted(ring) == sorted(neighbours(f, len(v))[centre]) and len(ring) == 6
    # each consecutive pair (r_i, r_i+1) closes a counter-clockwise face (centre, r_i, r_i+1)
    assert all((ring[i], ring[(i + 1) % 6]) in edges and (centre, ring[i]) in edges for i in range(6))
    assert ring[0] == min(ring)                                         # interior: lowest-index start
    # boundary vertex 2 (bottom edge): the walk starts at the neighbour without a predecessor
    assert rings[2].tolist() == [3, 8, 7, 1]


def test_spirals_start_at_their_vertex_and_walk_rings_in_order():
    v, f = icosphere(2)
    n = len(v)
    nb = neighbours(f, n)
    edges = oriented_edges(f)
    spirals = spiral_sequences(f, n, length=9, vertices=v)
    assert spirals.shape == (n, 9)
    assert (spirals[:, 0] == np.arange(n)).all()
    for s in spirals:
        val = len(nb[s[0]])                                             # 5 or 6 on an icosphere
        ring1 = s[1:1 + val].tolist()
        assert set(ring1) == nb[s[0]]
        assert all((ring1[i], ring1[i + 1]) in edges for i in range(val - 1))   # counter-clockwise order
        second = set().union(*(nb[u] for u in ring1)) - set(ring1) - {s[0]}
        assert set(s[1 + val:].tolist()) <= second                      # then the second ring
        assert len(set(s.tolist())) == 9
    dilated = spiral_sequences(f, n, length=5, dilation=2, vertices=v)
    full = spiral_sequences(f, n, length=10, vertices=v)
    np.testing.assert_array_equal(dilated, full[:, ::2])


def test_spirals_of_a_tiny_mesh_fill_with_nearest_vertices():
    v, f = icosphere(0)                                                 # 12 vertices, rings reach 12
    with pytest.raises(ValueError, match="vertices="):
        spiral_sequences(f[:4], 12, length=9)                           # a small fan runs out of rings
    s = spiral_sequences(f[:4], 12, length=9, vertices=v)
    assert (s[:, 0] == np.arange(12)).all() and all(len(set(r.tolist())) == 9 for r in s)


def test_closest_barycentric_regions_by_hand():
    a, b, c = np.array([[0.0, 0, 0]]), np.array([[2.0, 0, 0]]), np.array([[0.0, 2, 0]])
    cases = {(0.5, 0.5, 3.0): [0.5, 0.25, 0.25],                        # above the face: plain projection
             (-1.0, -1.0, 0.0): [1, 0, 0], (3.0, -1.0, 0.0): [0, 1, 0],  # vertex regions
             (1.0, -2.0, 1.0): [0.5, 0.5, 0], (-1.0, 1.5, 0.0): [0.25, 0, 0.75],  # edges AB, AC
             (2.0, 2.0, 0.0): [0, 0.5, 0.5]}                            # edge BC
    for p, expected in cases.items():
        got = mesh_sampling.closest_barycentric(np.array([p]), a, b, c)[0]
        np.testing.assert_allclose(got, expected, atol=1e-12)


def test_decimation_hits_the_target_and_stays_a_closed_manifold():
    v, f = icosphere(3)                                                 # 642 vertices
    kept, faces = mesh_sampling.decimate(v, f, 161)
    assert len(kept) == 161 and (np.diff(kept) > 0).all()
    assert faces.min() == 0 and faces.max() == 160
    edges = oriented_edges(faces)
    assert len(edges) == 3 * len(faces) and all((b, a) in edges for a, b in edges)  # every edge in 2 faces
    assert 161 - len(edges) // 2 + len(faces) == 2                      # Euler characteristic of a sphere
    normals = np.cross(v[kept][faces[:, 1]] - v[kept][faces[:, 0]], v[kept][faces[:, 2]] - v[kept][faces[:, 0]])
    assert ((normals * v[kept][faces].mean(1)).sum(1) > 0).mean() > 0.95  # orientation kept


def test_down_then_up_sampling_keeps_smooth_fields():
    v, f = icosphere(3)
    h = mesh_sampling.build_hierarchy(v, f, [4], [9, 9], [1, 1])
    down, up = h["down"][0], h["up"][0]
    kept = down.indices
    assert down.shape == (161, 642) and np.allclose(down.sum(1), 1) and np.allclose(up.sum(1), 1)
    np.testing.assert_allclose((up @ down).toarray()[kept][:, kept], np.eye(161), atol=1e-12)  # coarse verts exact
    field = np.sin(2 * v[:, 0]) + v[:, 1] ** 2 + 0.5 * v[:, 2]          # smooth, range ~2.7
    err = np.abs(up @ (down @ field) - field)
    # stated bound at this coarseness (642 -> 161 vertices, coarse edges up to ~0.6 of the radius):
    # at most 5 % of the field's range anywhere and 1 % on average
    assert err.max() < 0.05 * np.ptp(field) and err.mean() < 0.01 * np.ptp(field), (err.max(), err.mean())
    # on a flat mesh linear fields are reproduced exactly (barycentric weights)
    gv, gf = grid_mesh(9)
    g = mesh_sampling.build_hierarchy(gv, gf, [4], [9, 9], [1, 1])
    lin = 3 * gv[:, 0] - 2 * gv[:, 1] + 1
    np.testing.assert_allclose(g["up"][0] @ (g["down"][0] @ lin), lin, atol=1e-9)


def test_hierarchy_is_cached_by_hash(tmp_path):
    v, f = icosphere(2)
    first = mesh_sampling.build_hierarchy(v, f, [4], [9, 9], [1, 1], cache_dir=tmp_path)
    files = list(tmp_path.iterdir())
    assert [p.name for p in files] == [first["key"] + ".npz"]
    stamp = files[0].stat().st_mtime_ns
    again = mesh_sampling.build_hierarchy(v, f, [4], [9, 9], [1, 1], cache_dir=tmp_path)
    assert files[0].stat().st_mtime_ns == stamp                         # loaded, not recomputed
    for a, b in zip(first["spirals"] + first["faces"], again["spirals"] + again["faces"]):
        np.testing.assert_array_equal(a, b)
    assert (first["up"][0] != again["up"][0]).nnz == 0
    other = mesh_sampling.build_hierarchy(v, f, [4], [7, 7], [1, 1], cache_dir=tmp_path)
    assert other["key"] != first["key"] and len(list(tmp_path.iterdir())) == 2


def test_spiral_conv_and_sparse_pool_by_hand():
    conv = SpiralConv(2, 1, np.array([[0, 1], [1, 0], [2, 0]]))
    with torch.no_grad():
        conv.linear.weight.copy_(torch.tensor([[1.0, 10.0, 100.0, 1000.0]]))
        conv.linear.bias.fill_(0.5)
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])[:, None]    # N=3 x B=1 x C=2
    out = conv(x)[:, 0, 0]
    expected = [1 + 20 + 300 + 4000, 3 + 40 + 100 + 2000, 5 + 60 + 100 + 2000]
    torch.testing.assert_close(out, torch.tensor(expected) + 0.5)
    import scipy.sparse as sp
    m = sp.csr_matrix(np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]))
    pooled = sparse_pool(torch.arange(12.0).reshape(3, 2, 2), to_torch_sparse(m))
    torch.testing.assert_close(pooled, torch.einsum("ij,jbc->ibc", torch.tensor(m.toarray()).float(),
                                                    torch.arange(12.0).reshape(3, 2, 2)))


def test_decoder_overfits_a_handful_of_meshes():
    torch.manual_seed(0)
    v, f = icosphere(3)
    h = mesh_sampling.build_hierarchy(v, f, [4, 4], [9, 9, 9], [1, 1, 1])
    rng = np.random.default_rng(0)
    meshes = []
    for _ in range(4):                                                  # smooth random deformations
        a = rng.normal(0, 0.3, (3, 3))
        meshes.append(v + 0.3 * np.tanh(v @ a) + rng.normal(0, 0.1, 3))
    target = torch.tensor(np.stack(meshes), dtype=torch.float32)
    mean = target.mean(0)
    decoder = SpiralDecoder(8, h["spirals"], h["up"], [32, 16])
    assert torch.equal(decoder(torch.randn(4, 8)), torch.zeros(4, 642, 3))  # output layer starts at zero
    codes = torch.randn(4, 8)
    opt = torch.optim.Adam(decoder.parameters(), lr=3e-3)
    start = (mean - target).abs().mean().item()
    for _ in range(150):
        loss = (decoder(codes) + mean - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.15 * start, (loss.item(), start)


def _fake_bfm(path, n=100):
    """A tiny BFM.mat in face3d's field layout: struct 'model', 3N x k bases, 1-based tri / kpt_ind."""
    rng = np.random.default_rng(0)
    model = {"shapeMU": rng.normal(0, 1, (3 * n, 1)), "shapePC": rng.normal(0, 1, (3 * n, 199)),
             "shapeEV": np.ones((199, 1)), "expMU": rng.normal(0, 0.1, (3 * n, 1)),
             "expPC": rng.normal(0, 1, (3 * n, 29)), "expEV": np.ones((29, 1)),
             "tri": (np.stack([np.arange(n - 2), np.arange(1, n - 1), np.arange(2, n)]) + 1).astype(np.float64),
             "tri_mouth": np.ones((3, 114)), "kpt_ind": (np.arange(68) + 10.0)[None]}
    scipy.io.savemat(path, {"model": model})
    return model


def test_bfm_parameters_become_image_vertices(tmp_path):
    model = _fake_bfm(tmp_path / "BFM.mat")
    topo, bfm = load_mesh_model(tmp_path / "BFM.mat")
    assert topo.n_vertices == 100 and topo.faces.shape == (98, 3) and topo.faces[0].tolist() == [0, 1, 2]
    assert topo.landmark_ids.tolist() == list(range(9, 77))             # 1-based in the file
    shape, exp = np.zeros((199, 1)), np.zeros((29, 1))
    shape[3], exp[1] = 2.0, -1.0
    mean = (model["shapeMU"] + model["expMU"])[:, 0]
    flat = mean + 2.0 * model["shapePC"][:, 3] - model["expPC"][:, 1]
    v = flat.reshape(3, -1, order="F").T                                # face3d: reshape(3, N, 'F').T
    x, y, z = v.T
    cases = {  # Pose_Para = pitch, yaw, roll, tx, ty, tz, s  ->  expected image vertices (height 100, y = 101 - y)
        (0, 0, 0, 10, 20, 5, 2): np.stack([2 * x + 10, 100 + 1 - (2 * y + 20), 2 * z + 5], 1),
        (0, np.pi / 2, 0, 0, 0, 0, 1): np.stack([-z, 101 - y, x], 1),   # Ry of angle2matrix_3ddfa
        (0, 0, np.pi / 2, 0, 0, 0, 1): np.stack([y, 101 + x, z], 1),    # Rz: x' = y, y' = -x
        (np.pi / 2, 0, 0, 0, 0, 0, 1): np.stack([x, 101 - z, -y], 1),   # Rx: y' = z, z' = -y
    }
    for pose, expected in cases.items():
        mat = {"Shape_Para": shape, "Exp_Para": exp, "Pose_Para": np.array([pose], np.float32)}
        got = sample_vertices(mat, 100, bfm, 100, "sample.mat")
        np.testing.assert_allclose(got, expected, atol=1e-4)
    with pytest.raises(ValueError, match="BFM.mat"):
        sample_vertices({"Shape_Para": shape, "Exp_Para": exp, "Pose_Para": np.zeros((1, 7))}, 100, None, 100, "s.mat")
    stored = {"vertices": np.asarray(expected.T, np.float32)}           # the synthetic sets' layout
    np.testing.assert_allclose(sample_vertices(stored, 100, None, 100, "s.mat"), expected, atol=1e-4)
    np.testing.assert_allclose(pose_to_image(v, [0, 0, 0, 0, 0, 0, 1], 50)[:, 1], 51 - y)   # 3DDFA: H + 1 - y


def test_dataset_builds_bfm_targets_from_300w_lp_parameters(tmp_path):
    """A 300W-LP-style sample (parameters only, no stored mesh) through MeshDataset: the image height
    comes from the image, and the normalised target maps back onto the BFM mesh in the image frame."""
    from PIL import Image
    from reconstruction3d import formats
    from reconstruction3d.data import MeshDataset, denormalise_vertices
    _fake_bfm(tmp_path / "BFM.mat")
    topo, bfm = load_mesh_model(tmp_path / "BFM.mat")
    folder = tmp_path / "300W_LP" / "AFW"
    folder.mkdir(parents=True)
    Image.new("RGB", (120, 90), (90, 120, 150)).save(folder / "AFW_1_1_0.jpg")
    shape = np.zeros((199, 1))
    shape[0] = 1.0
    pose = np.array([[0.1, -0.4, 0.05, 60.0, 45.0, 0.0, 4.0]], np.float32)
    scipy.io.savemat(folder / "AFW_1_1_0.mat", {"Shape_Para": shape, "Exp_Para": np.zeros((29, 1)),
                                                "Pose_Para": pose, "pt2d": np.zeros((2, 68))})
    items = formats.list_samples("300wlp", tmp_path)
    assert [k for k, _, _ in items] == ["AFW/AFW_1_1_0"]
    item = MeshDataset(items, topo, bfm, input_size=32, box_scale=1.5, with_gt=True)[0]
    expected = pose_to_image(bfm.model_vertices(shape, np.zeros(29)), pose, 90)   # height 90 from the image
    np.testing.assert_allclose(item["vertices"].numpy(), expected, atol=1e-3)
    back = denormalise_vertices(item["target"], item["matrix"], 32).numpy()
    np.testing.assert_allclose(back[:, :2], expected[:, :2], atol=1e-3)
    assert item["yaw"] == pytest.approx(np.degrees(-0.4), abs=1e-4)


def test_check_measures_pt3d_68_against_the_bfm_mesh(tmp_path, capsys):
    """AFLW2000-3D-style files (BFM parameters + pt3d_68 one pixel right of and below the mesh's landmark
    vertices): the dataset check reports the (1, 1) offset, ~0 as if 1-based; data.pt3d_one_based undoes it."""
    from PIL import Image
    from reconstruction3d import data, formats
    _fake_bfm(tmp_path / "BFM.mat")
    topo, bfm = load_mesh_model(tmp_path / "BFM.mat")
    folder = tmp_path / "AFLW2000"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for k in range(3):
        shape, exp = rng.normal(0, 0.2, (199, 1)), np.zeros((29, 1))
        pose = np.array([[0.1, 0.3 * k, 0.0, 60.0, 50.0, 0.0, 4.0]], np.float32)
        landmarks = pose_to_image(bfm.model_vertices(shape, exp), pose, 120)[topo.landmark_ids] + [1.0, 1.0, 0.0]
        Image.new("RGB", (120, 120), (90, 120, 150)).save(folder / f"image{k:05d}.jpg")
        scipy.io.savemat(folder / f"image{k:05d}.mat", {"Shape_Para": shape, "Exp_Para": exp, "Pose_Para": pose,
                                                         "pt3d_68": landmarks.T.astype(np.float32)})
    report = data.check("aflw2000", tmp_path, "BFM.mat", out=str(tmp_path), input_size=32, box_scale=1.5, n_grid=2)
    offset, one_based = report["pt3d_68_offset_px"], report["pt3d_68_offset_px_if_one_based"]
    assert offset["dx"] == pytest.approx(1.0, abs=1e-3) and offset["dy"] == pytest.approx(1.0, abs=1e-3)
    assert offset["images"] == 3 and one_based["norm"] < 1e-3 and report["pose_file"] is None
    assert "pt3d_68 - mesh landmark vertices over 3 files" in capsys.readouterr().out
    items = formats.list_samples("aflw2000", tmp_path)
    item = data.MeshDataset(items, topo, bfm, input_size=32, box_scale=1.5, with_gt=True, pt3d_one_based=True)[0]
    np.testing.assert_allclose(item["landmarks"][:, :2].numpy(), item["vertices"][topo.landmark_ids, :2].numpy(),
                               atol=1e-3)


def test_mesh_files_with_missing_fields_name_the_file(tmp_path):
    scipy.io.savemat(tmp_path / "bad.mat", {"model": {"shapeMU": np.zeros((9, 1)), "tri": np.ones((3, 1))}})
    with pytest.raises(ValueError, match=r"bad\.mat.*lacks fields"):
        load_mesh_model(tmp_path / "bad.mat")
    scipy.io.savemat(tmp_path / "other.mat", {"x": np.zeros(3)})
    with pytest.raises(ValueError, match=r"other\.mat: neither"):
        load_mesh_model(tmp_path / "other.mat")
    with pytest.raises(FileNotFoundError, match="missing.mat"):
        load_mesh_model(tmp_path / "missing.mat")


def _rotation(yaw, pitch):
    cy, sy, cp, sp_ = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    return np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ np.array([[1, 0, 0], [0, cp, -sp_], [0, sp_, cp]])


def test_florence_alignment_recovers_a_similarity():
    v, f = icosphere(3)
    scan = v * [70.0, 95.0, 60.0]                                       # an ellipsoid "head" in mm
    landmark_ids = np.arange(68)
    pred = 0.4 * scan @ _rotation(0.5, 0.2).T + [3.0, -7.0, 1.0]        # posed, scaled, shifted copy
    assert rigid.florence_error(pred, scan, landmark_ids=landmark_ids, template=scan) < 1e-9
    # ICP against a differently sampled scan (no correspondence) still lands close
    dense = icosphere(4)[0] * [70.0, 95.0, 60.0]
    err = rigid.florence_error(pred, dense, landmark_ids=landmark_ids, template=scan, norm="bbox_diag")
    assert err < 0.01, err
    noisy = pred + np.random.default_rng(0).normal(0, 1.0, pred.shape)
    expected = 1.596 / 0.4 / np.linalg.norm(scan[36] - scan[45])    # E|N(0, I_3)| = 1.596, scan units / 0.4
    worse = rigid.florence_error(noisy, scan, landmark_ids=landmark_ids, template=scan)
    assert 0.7 * expected < worse < 1.1 * expected, (worse, expected)
