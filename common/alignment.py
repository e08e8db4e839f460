"""5-point similarity face alignment to the ArcFace template (face recognition, paper §4.1).

Follows insightface (shared/research/anchors_recog_au_emotion.md §1.3):
``python-package/insightface/utils/face_align.py`` estimates a similarity transform from the
five detected points to ``arcface_dst`` with ``skimage.transform.SimilarityTransform.estimate``
(Umeyama's least squares, no reflections) and warps with ``cv2.warpAffine`` (bilinear, border
0). Coordinates use the pixel-centre convention of ``common.transforms`` (pixel k has its
centre at k), which is OpenCV's, so the template is used as published.
"""
import torch

from common.transforms import apply_to_points, warp_image

# insightface ``face_align.py::arcface_dst``: (x, y) in a 112 x 112 crop of the image-left eye,
# image-right eye, nose tip, image-left and image-right mouth corners.
ARCFACE_TEMPLATE_112 = torch.tensor([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=torch.float64)


def arcface_template(out_size=112):
    """The five template points for an ``out_size`` square crop, as insightface's
    ``estimate_norm`` scales them: a multiple of 112 scales by out_size/112 (224 -> x2); a
    multiple of 128 (and not of 112) scales by r = out_size/128 and shifts x by +8r (the 112
    template centred in a 128 crop). insightface rejects other sizes; we scale them by
    out_size/112 (project choice). Like insightface, points are multiplied directly, not as
    (p+0.5)*r-0.5: the crop differs from an exact upscale by 0.5(r-1) px."""
    if out_size <= 0:
        raise ValueError(f"out_size must be positive, got {out_size}")
    if out_size % 112 != 0 and out_size % 128 == 0:
        r = out_size / 128.0
        return ARCFACE_TEMPLATE_112 * r + torch.tensor([8.0 * r, 0.0], dtype=torch.float64)
    return ARCFACE_TEMPLATE_112 * (out_size / 112.0)


def umeyama(src, dst, estimate_scale=True):
    """Least-squares similarity transform T minimising sum_i |T(src_i) - dst_i|^2.

    Umeyama, "Least-squares estimation of transformation parameters between two point
    patterns", TPAMI 1991: with centred points and Sigma = dst_c^T src_c / n = U S V^T,
    R = U D V^T where D = diag(1, ..., sign(det U det V)) so det R = +1 (never a reflection),
    c = trace(S D) / var(src), t = mean(dst) - c R mean(src).
    src, dst: (..., n, d) with n >= 2. Returns float64 (..., d+1, d+1).
    """
    s = torch.as_tensor(src, dtype=torch.float64)
    d = torch.as_tensor(dst, dtype=torch.float64)
    if s.shape != d.shape or s.dim() < 2 or s.shape[-2] < 2:
        raise ValueError(f"umeyama needs src and dst of equal shape (..., n>=2, d); "
                         f"got {tuple(s.shape)} and {tuple(d.shape)}")
    n, dim = s.shape[-2:]
    mu_s, mu_d = s.mean(-2, keepdim=True), d.mean(-2, keepdim=True)
    sc, dc = s - mu_s, d - mu_d
    var_s = sc.square().sum((-2, -1)) / n  # (...)
    if not bool((var_s > 1e-12).all()):
        raise ValueError("umeyama: the source points coincide; no transform can be estimated")
    cov = dc.transpose(-1, -2) @ sc / n  # (..., d, d)
    u, sig, vh = torch.linalg.svd(cov)
    sign = torch.sign(torch.linalg.det(u) * torch.linalg.det(vh))
    diag = torch.ones_like(sig)
    diag[..., -1] = torch.where(sign == 0, torch.ones_like(sign), sign)
    rot = u @ torch.diag_embed(diag) @ vh
    c = (sig * diag).sum(-1) / var_s if estimate_scale else torch.ones_like(var_s)
    lin = c[..., None, None] * rot
    t = mu_d[..., 0, :] - (lin @ mu_s[..., 0, :, None])[..., 0]
    out = torch.zeros(*s.shape[:-2], dim + 1, dim + 1, dtype=torch.float64, device=s.device)
    out[..., :dim, :dim], out[..., :dim, dim], out[..., dim, dim] = lin, t, 1.0
    return out


def five_points_from_68(pts68):
    """(..., 68, 2) iBUG points -> (..., 5, 2) in template order: eye centres as mean(36, 39)
    and mean(42, 45), nose tip 30, mouth corners 48, 54 (insightface ``eval_ijbc.py``)."""
    p = torch.as_tensor(pts68)
    if p.shape[-2:] != (68, 2):
        raise ValueError(f"expected (..., 68, 2) landmarks, got {tuple(p.shape)}")
    return torch.stack([(p[..., 36, :] + p[..., 39, :]) / 2, (p[..., 42, :] + p[..., 45, :]) / 2,
                        p[..., 30, :], p[..., 48, :], p[..., 54, :]], dim=-2)


def align_face(img, five_points, out_size=112, *, padding_mode="zeros"):
    """Warp ``img`` (C, H, W) or (N, C, H, W) so that ``five_points`` (5, 2) or (N, 5, 2) land on
    ``arcface_template(out_size)``. Returns (aligned image, float64 matrix original -> aligned)."""
    pts = torch.as_tensor(five_points, dtype=torch.float64)
    if pts.shape[-2:] != (5, 2):
        raise ValueError(f"expected five (x, y) points, got shape {tuple(pts.shape)}")
    template = arcface_template(out_size).expand_as(pts)
    matrix = umeyama(pts, template)
    return warp_image(img, matrix, out_size, padding_mode=padding_mode), matrix


def alignment_residual(five_points, matrix, out_size=112):
    """RMS distance (px, in the aligned crop) between the mapped points and the template;
    a large value flags a bad detection."""
    mapped = apply_to_points(matrix, torch.as_tensor(five_points, dtype=torch.float64))
    return (mapped - arcface_template(out_size)).square().sum(-1).mean(-1).sqrt()
