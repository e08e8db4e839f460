"""Tests for common.transforms (landmark-aware augmentation) and common.alignment (5-point)."""
import pytest
import torch
import torch.nn.functional as F

from common import alignment as al
from common import transforms as T
from common.landmark_schemes import flip_permutation


def f64(rows):
    return torch.tensor(rows, dtype=torch.float64)


def blob_image(centers, hw, sigma=1.5, channels=1):
    """Sum of Gaussian blobs at (x, y) centres, pixel k centred at k."""
    ys, xs = torch.meshgrid(torch.arange(hw[0], dtype=torch.float64),
                            torch.arange(hw[1], dtype=torch.float64), indexing="ij")
    img = sum(torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2)) for x, y in centers)
    return img.float().expand(channels, *hw).clone()


def centroid(img, center, radius):
    """Intensity centroid (x, y) of channel 0 inside a square window around ``center``."""
    x0, y0 = round(float(center[0])), round(float(center[1]))
    win = img[0, y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1].double()
    ys, xs = torch.meshgrid(torch.arange(y0 - radius, y0 + radius + 1, dtype=torch.float64),
                            torch.arange(x0 - radius, x0 + radius + 1, dtype=torch.float64),
                            indexing="ij")
    return torch.stack([(win * xs).sum() / win.sum(), (win * ys).sum() / win.sum()])


# ---------------------------------------------------------------- matrices and points

def test_hand_computed_matrices():
    assert torch.allclose(T.apply_to_points(T.hflip(10), [[0.0, 3.0], [4.5, 1.0]]),
                          f64([[9.0, 3.0], [4.5, 1.0]]))
    # 90 degrees anticlockwise on screen about (2, 2): the point right of centre goes up.
    r = T.rotation_scale(90.0, 2.0, center=(2.0, 2.0))
    assert torch.allclose(T.apply_to_points(r, [[3.0, 2.0]]), f64([[2.0, 0.0]]), atol=1e-12)
    # compose applies in argument order: translate then scale by 2 about the origin.
    m = T.compose(T.translation(1.0, 0.0), T.rotation_scale(0.0, 2.0))
    assert torch.allclose(T.apply_to_points(m, [[1.0, 1.0]]), f64([[4.0, 2.0]]))
    # 2x3 input is accepted; resize of a 256 crop to a 64 heatmap: u = (x + 0.5) / 4 - 0.5.
    assert T.as_matrix(torch.zeros(2, 3)).shape == (3, 3)
    assert torch.allclose(T.apply_to_points(T.resize((256, 256), (64, 64)), [[1.5, 255.5]]),
                          f64([[0.0, 63.5]]))


def test_crop_from_box_edges_and_round_trip():
    m = T.crop_from_box([10.0, 20.0, 30.0, 60.0], 64, scale=1.25)
    # square of side 40 * 1.25 = 50 centred at (20, 40); its edges hit the crop's pixel edges.
    corners = T.apply_to_points(m, [[-5.0, 15.0], [45.0, 65.0], [20.0, 40.0]])
    assert torch.allclose(corners, torch.tensor([[-0.5, -0.5], [63.5, 63.5], [31.5, 31.5]],
                                                dtype=torch.float64), atol=1e-12)
    # FAN's detector offset moves the centre up by 0.12 * box height.
    m2 = T.crop_from_box([10.0, 20.0, 30.0, 60.0], 64, offset=(0.0, -0.12))
    assert torch.allclose(T.apply_to_points(m2, [[20.0, 40.0 - 0.12 * 40]]),
                          torch.tensor([[31.5, 31.5]], dtype=torch.float64))
    # batched boxes: crop -> inverse gives back the points within 1e-4 px.
    g = torch.Generator().manual_seed(0)
    boxes = torch.rand(8, 2, generator=g) * 300
    boxes = torch.cat([boxes, boxes + 20 + torch.rand(8, 2, generator=g) * 200], 1)
    pts = torch.rand(8, 68, 2, generator=g) * 500
    mats = T.crop_from_box(boxes, 256, scale=1.3)
    back = T.apply_to_points(T.invert(mats), T.apply_to_points(mats, pts))
    assert back.dtype == torch.float32 and (back - pts).abs().max() < 1e-4
    with pytest.raises(ValueError, match="positive extent"):
        T.crop_from_box([5.0, 5.0, 5.0, 5.0], 64)


# ---------------------------------------------------------------- warping

def test_resize_warp_matches_interpolate():
    """Pins the pixel convention to torch's align_corners=False resize."""
    img = torch.rand(2, 3, 7, 7, generator=torch.Generator().manual_seed(1))
    m = T.crop_from_box([-0.5, -0.5, 6.5, 6.5], 14)  # the 7x7 image's pixel edges -> 14x14
    ref = F.interpolate(img, size=(14, 14), mode="bilinear", align_corners=False)
    assert torch.allclose(T.warp_image(img, m, 14, padding_mode="border"), ref, atol=1e-5)
    assert torch.allclose(T.warp_image(img, T.resize((7, 7), (14, 14)), 14, padding_mode="border"),
                          ref, atol=1e-5)


def test_warped_dot_lands_where_points_say():
    x0, y0 = 20.3, 17.6
    img = blob_image([(x0, y0)], (48, 48))
    crop = T.crop_from_box([10.0, 8.0, 30.0, 28.0], 80)  # x4 zoom: a half-pixel slip = 2 px
    m = T.compose(crop, T.rotation_scale(25.0, 1.1, center=(39.5, 39.5)), T.translation(3.0, -2.0))
    out = T.warp_image(img, m, 80)
    expected = T.apply_to_points(m, [[x0, y0]])[0]
    assert (centroid(out, expected, 20) - expected).abs().max() < 0.1


def test_warp_batched_and_uint8():
    g = torch.Generator().manual_seed(2)
    img = torch.rand(3, 2, 16, 16, generator=g)
    mats = torch.stack([T.rotation_scale(a, 1.2, (7.5, 7.5)) for a in (0.0, 30.0, -70.0)])
    batched = T.warp_image(img, mats, (12, 20))
    single = torch.stack([T.warp_image(img[i], mats[i], (12, 20)) for i in range(3)])
    assert batched.shape == (3, 2, 12, 20) and torch.allclose(batched, single, atol=1e-6)
    u8 = (img[0] * 255).round().to(torch.uint8)
    out = T.warp_image(u8, mats[1], 16)
    assert out.dtype == torch.uint8
    assert (out.float() - T.warp_image(u8.float(), mats[1], 16)).abs().max() <= 0.5
    with pytest.raises(ValueError, match="matrices for a batch"):
        T.warp_image(img, mats[:2], 8)


# ---------------------------------------------------------------- random geometric augmentation

def test_random_affine_params_ranges_and_determinism():
    g = torch.Generator().manual_seed(3)
    draws = [T.random_affine_params(g, 30.0, (0.75, 1.25), 0.1, 0.5) for _ in range(200)]
    assert all(abs(p.angle_deg) <= 30 and 0.75 <= p.scale <= 1.25 for p in draws)
    assert all(abs(t) <= 0.1 for p in draws for t in p.translate)
    assert 60 < sum(p.flip for p in draws) < 140
    again = T.random_affine_params(torch.Generator().manual_seed(3), 30.0, (0.75, 1.25), 0.1, 0.5)
    assert again == draws[0]
    none = T.random_affine_params(g, 30.0, (1.0, 1.0), 0.0, 0.0, rotation_prob=0.0)
    assert none.angle_deg == 0.0 and none.scale == 1.0 and not none.flip


def test_flip_twice_is_identity_and_symmetric_faces_are_fixed():
    g = torch.Generator().manual_seed(4)
    img, w = torch.rand(3, 24, 30, generator=g), 30
    pts = torch.rand(68, 2, generator=g) * 20
    flip = T.LandmarkAugment(flip_prob=1.0, n_points=68)
    img1, pts1 = flip(img, pts)
    assert torch.allclose(img1, img.flip(-1), atol=1e-5)
    # point 36 of the flipped face is the mirrored point 45 of the original (and vice versa).
    assert torch.allclose(pts1[36], torch.tensor([w - 1 - pts[45, 0], pts[45, 1]]))
    assert torch.allclose(pts1[45], torch.tensor([w - 1 - pts[36, 0], pts[36, 1]]))
    img2, pts2 = flip(img1, pts1)
    assert torch.allclose(img2, img, atol=1e-5) and torch.allclose(pts2, pts, atol=1e-5)
    # a configuration symmetric about the image's vertical axis is unchanged by the flip.
    perm = flip_permutation(68)
    sym = pts.clone()
    for i, j in enumerate(perm):
        if i < j:
            sym[j] = torch.tensor([w - 1 - sym[i, 0], sym[i, 1]])
        elif i == j:
            sym[i, 0] = (w - 1) / 2
    assert torch.allclose(flip(img, sym)[1], sym, atol=1e-5)


def test_augment_composes_with_crop_and_carries_extra_columns():
    g = torch.Generator().manual_seed(5)
    img = torch.rand(3, 50, 40, generator=g)
    pts = torch.cat([torch.rand(5, 2, generator=g) * 30, torch.arange(5.0)[:, None]], 1)
    crop = T.crop_from_box([5.0, 5.0, 35.0, 45.0], 32)
    plain = T.LandmarkAugment()
    out_img, out_pts = plain(img, pts, matrix=crop, out_size=32)
    assert torch.allclose(out_img, T.warp_image(img, crop, 32))
    assert torch.allclose(out_pts[:, :2], T.apply_to_points(crop, pts[:, :2]))
    aug = T.LandmarkAugment(rotation=30.0, scale=(0.8, 1.2), translation=0.1, flip_prob=1.0,
                            n_points=5)
    m, flipped = aug.sample_matrix((32, 32), torch.Generator().manual_seed(6))
    out_img, out_pts = aug(img, pts, matrix=crop, out_size=32,
                           generator=torch.Generator().manual_seed(6))
    perm = flip_permutation(5)
    assert flipped and torch.allclose(out_img, T.warp_image(img, m @ crop, 32))
    assert torch.allclose(out_pts[:, :2], T.apply_to_points(m @ crop, pts[perm, :2]))
    assert out_pts[:, 2].tolist() == [float(p) for p in perm]  # extra column permuted, unchanged
    with pytest.raises(ValueError, match="n_points"):
        T.LandmarkAugment(flip_prob=0.5)


def test_affine_from_params_rotates_about_centre():
    p = T.AffineParams(angle_deg=90.0, scale=1.0, translate=(0.0, 0.0), flip=False)
    m = T.affine_from_params(p, (5, 5))
    assert torch.allclose(T.apply_to_points(m, [[4.0, 2.0], [2.0, 2.0]]),
                          f64([[2.0, 0.0], [2.0, 2.0]]), atol=1e-12)
    p = T.AffineParams(angle_deg=0.0, scale=2.0, translate=(0.1, -0.2), flip=True)
    # (h, w) = (10, 20), centre (9.5, 4.5): x 0 -> 19 (flip) -> 28.5 (x2 about 9.5) -> 30.5 (+2);
    # y 4.5 stays at the centre, then -0.2 * 10.
    m = T.affine_from_params(p, (10, 20))
    assert torch.allclose(T.apply_to_points(m, [[0.0, 4.5]]),
                          f64([[30.5, 2.5]]))


# ---------------------------------------------------------------- photometric

def test_color_jitter_hand_values():
    img = torch.tensor([0.2, 0.5, 0.8])[:, None, None].expand(3, 4, 4).clone()
    assert torch.equal(T.ColorJitter()(img), img)
    assert torch.allclose(T.ColorJitter(brightness=(1.2, 1.2))(img), img * 1.2)
    assert torch.allclose(T.ColorJitter(brightness=(1.5, 1.5))(img)[2], torch.ones(4, 4))  # clamped
    gray = 0.2989 * 0.2 + 0.587 * 0.5 + 0.114 * 0.8
    assert torch.allclose(T.ColorJitter(saturation=(0.0, 0.0))(img), torch.full_like(img, gray),
                          atol=1e-3)
    assert torch.allclose(T.ColorJitter(contrast=(0.5, 0.5))(img), 0.5 * img + 0.5 * gray,
                          atol=1e-3)
    red = torch.zeros(3, 2, 2)
    red[0] = 1.0
    cyan = T.ColorJitter(hue=(0.5, 0.5))(red)
    assert torch.allclose(cyan[:, 0, 0], torch.tensor([0.0, 1.0, 1.0]), atol=1e-5)
    g = torch.Generator().manual_seed(7)
    ratios = [T.ColorJitter(brightness=0.2)(torch.full((3, 2, 2), 0.5), g)[0, 0, 0] / 0.5
              for _ in range(20)]
    assert all(0.8 - 1e-6 <= r <= 1.2 + 1e-6 for r in ratios) and len(set(ratios)) > 1
    with pytest.raises(ValueError, match="hue"):
        T.ColorJitter(hue=0.7)


def test_gaussian_blur_impulse():
    img = torch.zeros(1, 21, 21)
    img[0, 10, 10] = 1.0
    out = T.gaussian_blur(img, 1.0)  # kernel 7
    g = torch.exp(-torch.arange(-3.0, 4.0) ** 2 / 2)
    assert torch.allclose(out[0, 10, 10], (1.0 / g.sum()) ** 2, atol=1e-6)
    assert torch.allclose(out.sum(), torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(centroid(out, (10, 10), 5), f64([10.0, 10.0]))
    assert torch.equal(T.GaussianBlur(sigma=(1.0, 2.0), p=0.0)(img), img)
    blurred = T.GaussianBlur(sigma=(0.5, 2.0))(img, torch.Generator().manual_seed(8))
    assert blurred[0, 10, 10] < 1.0 and abs(float(blurred.sum()) - 1.0) < 1e-5
    # kernel-size form (paper App. A: 5 to 10 px): k = 7 gives sigma = 0.15 * 6 + 0.5 = 1.4.
    g7 = torch.exp(-torch.arange(-3.0, 4.0) ** 2 / (2 * 1.4 ** 2))
    assert torch.allclose(T.gaussian_blur(img, kernel_size=7)[0, 10, 10], (1 / g7.sum()) ** 2)
    aug = T.GaussianBlur(kernel_size=(5, 10), p=1.0)
    assert aug.sizes == [5, 7, 9]
    g = torch.Generator().manual_seed(9)
    centres = {round(float(aug(img, g)[0, 10, 10]), 6) for _ in range(40)}
    expected = {round(float((1 / torch.exp(-torch.arange(-k // 2 + 1.0, k // 2 + 1.0) ** 2
                                         / (2 * (0.15 * (k - 1) + 0.5) ** 2)).sum()) ** 2), 6)
                for k in (5, 7, 9)}
    assert centres == expected
    with pytest.raises(ValueError, match="exactly one"):
        T.GaussianBlur()


# ---------------------------------------------------------------- alignment

def test_arcface_template_sizes():
    t = al.ARCFACE_TEMPLATE_112
    assert torch.allclose(t[0], torch.tensor([38.2946, 51.6963], dtype=torch.float64))
    assert torch.equal(al.arcface_template(112), t)
    assert torch.allclose(al.arcface_template(224), 2 * t)
    assert torch.allclose(al.arcface_template(128), t + f64([8.0, 0.0]))
    assert torch.allclose(al.arcface_template(256), 2 * t + f64([16.0, 0.0]))
    assert torch.allclose(al.arcface_template(160), t * 160 / 112)


def test_umeyama_recovers_known_similarity():
    a = T.compose(T.rotation_scale(23.0, 1.7), T.translation(5.0, -3.0))
    src = T.apply_to_points(a, al.ARCFACE_TEMPLATE_112)
    assert torch.allclose(al.umeyama(src, al.ARCFACE_TEMPLATE_112), T.invert(a), atol=1e-6)
    assert torch.allclose(al.umeyama(al.ARCFACE_TEMPLATE_112, src), a, atol=1e-6)
    rigid = al.umeyama(al.ARCFACE_TEMPLATE_112, src, estimate_scale=False)
    assert torch.allclose(rigid[:2, :2], a[:2, :2] / 1.7, atol=1e-9)


def _complex_similarity(src, dst):
    """Closed-form 2-D least-squares similarity z -> b z + c with complex numbers."""
    zs, zd = torch.view_as_complex(src.contiguous()), torch.view_as_complex(dst.contiguous())
    zs_c, zd_c = zs - zs.mean(-1, keepdim=True), zd - zd.mean(-1, keepdim=True)
    return (zs_c.conj() * zd_c).sum(-1) / zs_c.abs().square().sum(-1)


def test_umeyama_matches_closed_form_and_never_reflects():
    g = torch.Generator().manual_seed(9)
    src = torch.rand(6, 5, 2, generator=g, dtype=torch.float64) * 100
    dst = torch.rand(6, 5, 2, generator=g, dtype=torch.float64) * 100  # unrelated: noisy fit
    dst[3:, :, 0] = -src[3:, :, 0]  # pure mirror images: the best proper fit is not a reflection
    dst[3:, :, 1] = src[3:, :, 1]
    m = al.umeyama(src, dst)
    b = _complex_similarity(src, dst)  # (6,)
    assert torch.allclose(m[:, 0, 0], b.real, atol=1e-9)
    assert torch.allclose(m[:, 1, 0], b.imag, atol=1e-9)
    assert (torch.linalg.det(m[:, :2, :2]) > 0).all()
    with pytest.raises(ValueError, match="coincide"):
        al.umeyama(torch.ones(5, 2), torch.rand(5, 2))


def test_align_face_template_is_identity_and_dots_land_on_template():
    t = al.ARCFACE_TEMPLATE_112
    img = torch.rand(3, 112, 112, generator=torch.Generator().manual_seed(10))
    out, m = al.align_face(img, t)
    assert torch.allclose(m, torch.eye(3, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(out, img, atol=1e-4)
    a = T.compose(T.rotation_scale(-15.0, 1.4), T.translation(30.0, 12.0))  # template -> image
    src = T.apply_to_points(a, t)
    scene = blob_image(src.tolist(), (200, 220), sigma=2.0, channels=3)
    aligned, m = al.align_face(scene[None], src[None], out_size=224)
    assert torch.allclose(m[0], T.compose(T.invert(a), T.rotation_scale(0.0, 2.0)), atol=1e-9)
    for p in al.arcface_template(224):
        assert (centroid(aligned[0], p, 8) - p).abs().max() < 0.1
    assert al.alignment_residual(src, m[0], 224) < 1e-9


def test_five_points_from_68():
    pts = torch.zeros(68, 2)
    for i, xy in {36: (0, 0), 39: (2, 4), 42: (10, 0), 45: (12, 2), 30: (6, 8), 48: (3, 12),
                  54: (9, 12)}.items():
        pts[i] = torch.tensor(xy, dtype=torch.float32)
    five = al.five_points_from_68(pts)
    assert torch.equal(five, torch.tensor([[1.0, 2], [11, 1], [6, 8], [3, 12], [9, 12]]))
    with pytest.raises(ValueError, match="68"):
        al.five_points_from_68(torch.zeros(98, 2))
