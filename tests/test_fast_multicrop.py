"""The fast multi-crop path (pretrain/fast_multicrop.py, pretrain/fast_color.py) against the reference
recipe (pretrain/data.py MultiCropTransform, torchvision v1): parameter distributions (KS tests and
binomial bounds on a few hundred seeded draws), each op against torchvision's tensor functions,
decoding against PIL, worker vs device paths, and whole-pipeline output statistics."""
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from torchvision import transforms as T
from torchvision.transforms.v2 import functional as F2

from pretrain import fast_color as fc
from pretrain.collapse import CollapseGuard
from pretrain.data import MEAN, STD, ImageDataset, MultiCropTransform, collate_skip_bad, load_rgb
from pretrain.fast_multicrop import (DeviceAugment, FastMultiCrop, build_transform, crop_boxes, decode_image,
                                     load_image, resolve_num_workers)

N = 300  # draws per distribution test


def _boxes(draw, n, seed0=0):
    out = []
    for i in range(n):
        torch.manual_seed(seed0 + i)
        out.append(draw())
    return np.array(out, dtype=np.float64)


def _scene(h=96, w=96, seed=0):
    """A smooth colourful test image: gradients plus random coloured disks."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([x, y, 1 - x * y], -1) * 160 + 40
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 20)
        img[(np.mgrid[0:h, 0:w][0] - cy) ** 2 + (np.mgrid[0:h, 0:w][1] - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


@pytest.mark.parametrize("height,width,scale", [(256, 256, (0.14, 1.0)), (120, 200, (0.05, 0.14)),
                                                (90, 60, (0.5, 1.0))])
def test_crop_boxes_follow_random_resized_crop(height, width, scale):
    ours = FastMultiCrop(sizes=[32], counts=[1], scales=[scale])
    mine = _boxes(lambda: ours.sample_params(height, width)[0][0], N)
    ref = _boxes(lambda: T.RandomResizedCrop.get_params(torch.empty(3, height, width), list(scale), [3 / 4, 4 / 3]), N,
                 seed0=10_000)
    for col in (mine, ref):
        assert (col[:, 0] >= 0).all() and (col[:, 0] + col[:, 2] <= height).all()
        assert (col[:, 1] >= 0).all() and (col[:, 1] + col[:, 3] <= width).all()

    def features(b):  # area fraction, log-aspect, relative top and left position
        return [b[:, 2] * b[:, 3] / (height * width), np.log(b[:, 3] / b[:, 2]),
                (b[:, 0] + 0.5) / (height - b[:, 2] + 1), (b[:, 1] + 0.5) / (width - b[:, 3] + 1)]
    for a, b in zip(features(mine), features(ref)):
        assert stats.ks_2samp(a, b).pvalue > 0.001
    # the test can fail: another scale range is told apart
    other = FastMultiCrop(sizes=[32], counts=[1], scales=[(scale[0] + 0.5 * (scale[1] - scale[0]), scale[1])])
    shifted = _boxes(lambda: other.sample_params(height, width)[0][0], N)
    assert stats.ks_2samp(features(shifted)[0], features(ref)[0]).pvalue < 1e-6


def test_crop_boxes_by_hand():
    """Area fraction 0.36 of 100 x 100 (3600 px): log-aspect at mid-range gives r = 1, a 60 x 60
    box; at the top r = 4/3: w = round(sqrt(3600 4/3)) = 69, h = round(sqrt(3600 3/4)) = 52. The
    position is floor(u (100 - side + 1)); a draw that does not fit is skipped."""
    u = np.zeros((3, 22))
    u[:, 10] = [0.5, 1.0, 0.5]          # first attempt's log-aspect
    u[2, 0], u[2, 1], u[2, 11] = 1.0, 0.0, 0.5  # crop 2: first attempt too large (area 2 x 100^2), second fits
    u[:, 20], u[:, 21] = 0.999, 0.0     # top, left
    lo, hi = np.array([0.36, 0.36, 0.36]), np.array([0.36, 0.36, 2.0])
    boxes = crop_boxes(u, 100, 100, lo, hi)
    assert boxes.tolist() == [[40, 0, 60, 60], [48, 0, 52, 69], [40, 0, 60, 60]]


def test_crop_fallback_is_torchvision_centre_crop():
    """A 10:1 strip at scale >= 0.9: no draw fits, both give the centre crop of aspect 4/3."""
    ours = FastMultiCrop(sizes=[16], counts=[1], scales=[(0.9, 1.0)])
    torch.manual_seed(0)
    box = ours.sample_params(100, 1000)[0][0].tolist()
    assert box == [0, (1000 - 133) // 2, 100, 133]
    assert list(T.RandomResizedCrop.get_params(torch.empty(3, 100, 1000), [0.9, 1.0], [3 / 4, 4 / 3])) == box


def test_color_params_follow_the_configured_distributions():
    torch.manual_seed(0)
    p = fc.sample_color_params(4000, strength=1.0).numpy()  # one vectorised draw
    ref = np.array([[float(v) for v in T.ColorJitter.get_params((0.2, 1.8), (0.2, 1.8), (0.2, 1.8), (-0.2, 0.2))[1:]]
                    for _ in range(N)])
    for col, (lo, hi) in zip((fc.BRIGHT, fc.CONTRAST, fc.SAT, fc.HUE), [(0.2, 1.8)] * 3 + [(-0.2, 0.2)]):
        assert stats.kstest(p[:, col], stats.uniform(lo, hi - lo).cdf).pvalue > 0.001
        assert stats.ks_2samp(p[:, col], ref[:, col]).pvalue > 0.001  # ColorJitter.get_params
    assert stats.kstest(p[:, fc.SIGMA], stats.uniform(0.1, 1.9).cdf).pvalue > 0.001
    n = len(p)
    jittered = p[:, fc.ORDER] >= 0
    for rate, flags in ((0.8, jittered), (0.2, p[:, fc.GRAY] > 0), (0.5, p[:, fc.BLUR] > 0)):
        assert abs(flags.mean() - rate) < 4 * math.sqrt(rate * (1 - rate) / n)
    order = p[jittered, fc.ORDER:fc.ORDER + 4].astype(int)
    assert (np.sort(order, 1) == np.arange(4)).all() and (p[~jittered, fc.ORDER:fc.ORDER + 4] == -1).all()
    counts = np.array([[np.sum(order[:, step] == op) for op in range(4)] for step in range(4)])
    assert stats.chisquare(counts.ravel()).pvalue > 0.001  # each op equally likely at each step
    perms = np.unique(order @ 4 ** np.arange(4), return_counts=True)[1]
    assert len(perms) == 24 and stats.chisquare(perms).pvalue > 0.001
    torch.manual_seed(1)
    moco = fc.sample_color_params(N, strength=0.5).numpy()  # MoCo-v2: ColorJitter(0.4, 0.4, 0.4, 0.1)
    assert moco[:, :3].min() >= 0.6 and moco[:, :3].max() <= 1.4 and np.abs(moco[:, fc.HUE]).max() <= 0.1
    assert moco[:, :3].min() < 0.62 and np.abs(moco[:, fc.HUE]).max() > 0.098
    eight = FastMultiCrop(sizes=[8], counts=[8], scales=[(0.1, 1)])
    flips = _boxes(lambda: eight.sample_params(9, 9)[1], N).ravel()
    assert abs(flips.mean() - 0.5) < 4 * math.sqrt(0.25 / flips.size)
    with pytest.raises(ValueError, match="hue range"):
        FastMultiCrop(sizes=[8], counts=[1], scales=[(0.1, 1)], color_strength=3.0)


def test_each_colour_op_matches_torchvision():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 21, 23)
    x[0, :, :4] = 0.5                  # grey pixels (no hue)
    x[1, 1] = x[1, 0]                  # R = G ties
    f = torch.tensor([0.3, 0.9, 1.5, 1.8])
    for fn, ref in ((fc._brightness_, F2.adjust_brightness), (fc._contrast_, F2.adjust_contrast),
                    (fc._saturation_, F2.adjust_saturation)):
        y = x.clone()
        fn(y, f)
        torch.testing.assert_close(y, torch.stack([ref(x[i], float(f[i])) for i in range(4)]), atol=1e-6, rtol=0)
    for shift in (-0.5, -0.2, -0.03, 0.0, 0.11, 0.2, 0.5):
        y = x.clone()
        fc._hue_(y, torch.full((4,), shift))
        torch.testing.assert_close(y, F2.adjust_hue(x, shift), atol=1e-5, rtol=0)
    y = x.clone()
    fc._grayscale_(y)
    torch.testing.assert_close(y, F2.rgb_to_grayscale(x, num_output_channels=3))
    sigma = torch.tensor([0.1, 0.7, 1.3, 2.0])
    y = x.clone()
    fc._blur_(y, sigma)
    ref = [F2.gaussian_blur(x[i], [2 * math.ceil(3 * float(s)) + 1] * 2, [float(s)] * 2) for i, s in enumerate(sigma)]
    torch.testing.assert_close(y, torch.stack(ref), atol=1e-6, rtol=0)


def test_augment_color_applies_each_crops_order_then_grey_blur_normalise():
    torch.manual_seed(1)
    x = (torch.rand(3, 3, 17, 17) * 255).round().to(torch.uint8)
    params = torch.zeros(3, fc.N_PARAMS)
    params[:, :4] = torch.tensor([[1.4, 0.6, 1.7, 0.15], [0.5, 1.3, 0.2, -0.1], [1.1, 1.1, 1.1, 0.1]])
    params[:, fc.ORDER:fc.ORDER + 4] = torch.tensor([[3, 0, 1, 2], [2, 1, 0, 3], [-1, -1, -1, -1]])
    params[:, fc.GRAY] = torch.tensor([0.0, 1.0, 0.0])
    params[:, fc.BLUR] = torch.tensor([1.0, 0.0, 1.0])
    params[:, fc.SIGMA] = torch.tensor([1.2, 0.5, 0.4])
    out = fc.augment_color(x, params, mean=MEAN, std=STD)
    ops = (F2.adjust_brightness, F2.adjust_contrast, F2.adjust_saturation, F2.adjust_hue)
    for i in range(3):
        y = x[i].float() / 255
        for op in params[i, fc.ORDER:fc.ORDER + 4].long().tolist():
            if op >= 0:
                y = ops[op](y, float(params[i, op]))
        if params[i, fc.GRAY]:
            y = F2.rgb_to_grayscale(y, num_output_channels=3)
        if params[i, fc.BLUR]:
            s = float(params[i, fc.SIGMA])
            y = F2.gaussian_blur(y, [2 * math.ceil(3 * s) + 1] * 2, [s, s])
        torch.testing.assert_close(out[i], F2.normalize(y, MEAN, STD), atol=2e-5, rtol=0)


def test_crops_are_torchvision_resized_crops_and_seeded():
    img = torch.from_numpy(np.array(_scene(80, 70))).permute(2, 0, 1)
    t = FastMultiCrop(sizes=[40, 16], counts=[2, 3], scales=[(0.14, 1.0), (0.05, 0.14)], defer_color=True)
    torch.manual_seed(7)
    out = t(img)
    torch.manual_seed(7)
    boxes, flips, color = t.sample_params(80, 70)
    assert [tuple(c.shape) for c in out[:-1]] == [(3, 40, 40)] * 2 + [(3, 16, 16)] * 3
    assert out[-1].shape == (5, fc.N_PARAMS) and torch.equal(out[-1], torch.from_numpy(color))
    for crop, (top, left, h, w), flip, size in zip(out, boxes.tolist(), flips, t.sizes):
        ref = F2.resized_crop(img, top, left, h, w, [size, size], antialias=True)
        ref = ref.flip(-1) if flip else ref
        assert crop.dtype == torch.uint8 and (crop.int() - ref.int()).abs().max() <= 1
    torch.manual_seed(7)
    assert all(torch.equal(a, b) for a, b in zip(out, t(img)))
    assert not torch.equal(t(img)[0], out[0])  # the RNG moved on: another draw


def test_worker_and_device_paths_give_the_same_batch(tmp_path):
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.jpg"))
        _scene(64, 64, seed=i).save(paths[-1], quality=95)
    kw = dict(sizes=[32, 16], counts=[2, 2], scales=[(0.14, 1.0), (0.05, 0.14)])
    worker = ImageDataset(paths, FastMultiCrop(**kw))
    deferred = ImageDataset(paths, FastMultiCrop(**kw, defer_color=True))
    keys = [(0, 11), (1, 12), (2, 13)]
    a, bad = collate_skip_bad([worker[k] for k in keys])
    b, _ = collate_skip_bad([deferred[k] for k in keys])
    assert bad == 0 and len(b) == 5 and b[-1].shape == (3, 4, fc.N_PARAMS)
    b = DeviceAugment()(b, torch.device("cpu"), torch.channels_last)
    assert [tuple(c.shape) for c in b] == [(3, 3, 32, 32)] * 2 + [(3, 3, 16, 16)] * 2
    assert b[0].is_contiguous(memory_format=torch.channels_last)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
    state = torch.get_rng_state()
    again = worker[(0, 11)]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    assert all(torch.equal(x[0], y) for x, y in zip(a, again))


def test_output_statistics_match_the_pil_reference():
    """Per-crop channel means and contrast over 300 seeded samples: two-sample KS against
    MultiCropTransform on the same image; a weaker colour strength is told apart."""
    img = _scene()
    kw = dict(sizes=[32, 16], counts=[1, 1], scales=[(0.14, 1.0), (0.05, 0.14)])

    def sample(transform, n=300):
        out = []
        for i in range(n):
            torch.manual_seed(i)
            out.append(torch.stack([torch.cat([c.mean((1, 2)), c.std((1, 2))]) for c in transform(img)]))
        return torch.stack(out).numpy()  # n x crops x (3 means, 3 stds)
    ref, ours = sample(MultiCropTransform(**kw)), sample(FastMultiCrop(**kw))
    weak = sample(FastMultiCrop(**kw, color_strength=0.3))
    p_ours = [stats.ks_2samp(ref[:, v, k], ours[:, v, k]).pvalue for v in range(2) for k in range(6)]
    p_weak = [stats.ks_2samp(ref[:, v, k], weak[:, v, k]).pvalue for v in range(2) for k in range(6)]
    assert min(p_ours) > 0.001, p_ours
    assert min(p_weak) < 1e-4, p_weak


def test_decode_matches_pil_and_rejects_broken_files(tmp_path):
    img = _scene(40, 50)
    img.convert("CMYK").save(tmp_path / "cmyk.jpg")
    img.convert("L").save(tmp_path / "gray.png")
    img.convert("RGBA").save(tmp_path / "rgba.png")
    img.convert("P").save(tmp_path / "palette.gif")
    img.save(tmp_path / "ok.jpg", quality=90)
    img.save(tmp_path / "ok.bmp")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    for name in ("cmyk.jpg", "gray.png", "rgba.png", "palette.gif", "ok.jpg", "ok.bmp"):
        ours, full = load_image(str(tmp_path / name))
        ref = np.asarray(load_rgb(str(tmp_path / name)))
        assert full == (40, 50) and ours.dtype == torch.uint8 and ours.shape == (3, 40, 50), name
        assert np.abs(ours.permute(1, 2, 0).numpy().astype(int) - ref).max() <= 1, name
    tiny = FastMultiCrop(sizes=[8], counts=[1], scales=[(0.5, 1)])
    for name in ("truncated.jpg", "zero.jpg", "text.jpg", "missing.jpg"):
        assert load_image(str(tmp_path / name)) is None, name
        assert ImageDataset([str(tmp_path / name)], tiny)[(0, 1)] is None, name


def test_decode_raises_no_deprecation_warning(tmp_path):
    """A JPEG (whole and DCT-scaled), a PNG and a 16-bit PNG decode to PIL's pixels without a
    DeprecationWarning (torchvision's decoders, deprecated since 0.29, are not used)."""
    img = _scene(64, 80)
    img.save(tmp_path / "a.jpg", quality=90)
    img.save(tmp_path / "a.png")
    grey = (np.arange(64 * 80).reshape(64, 80) * 13 % 65536).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey16.png")  # mode I;16
    names = ("a.jpg", "a.png", "grey16.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoded = {name: decode_image((tmp_path / name).read_bytes()) for name in names}
        small, full = decode_image((tmp_path / "a.jpg").read_bytes(), min_side=16)
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)], [str(w.message) for w in caught]
    for name, (ours, size) in decoded.items():
        ref = np.asarray(load_rgb(str(tmp_path / name)))
        assert size == (64, 80) and ours.dtype == torch.uint8 and ours.shape == (3, 64, 80), name
        assert np.abs(ours.permute(1, 2, 0).numpy().astype(int) - ref).max() <= 1, name
    assert (decoded["grey16.png"][0].numpy() == (grey >> 8)[None]).all()  # the top 8 bits, not clipped
    with Image.open(tmp_path / "a.jpg") as pil:
        pil.draft("RGB", (20, 16))  # libjpeg's 1/4 DCT scaling: 64 // 4 = 16 >= min_side
        ref = np.asarray(pil.convert("RGB"))
    assert full == (64, 80) and small.shape == (3, 16, 20)
    assert np.abs(small.permute(1, 2, 0).numpy().astype(int) - ref).max() <= 1


def test_reduced_size_jpeg_decode_keeps_the_crops(tmp_path):
    _scene(900, 1200).save(tmp_path / "big.jpg", quality=95)
    t = FastMultiCrop(sizes=[96], counts=[2], scales=[(0.5, 1.0)], defer_color=True)
    assert t.min_source_side == math.ceil(96 / math.sqrt(0.75 * 0.5)) == 157
    small, full = t.load(str(tmp_path / "big.jpg"))  # 900 // 4 = 225 >= 157 > 900 // 8
    assert full == (900, 1200) and small.shape == (3, 225, 300)
    whole = load_image(str(tmp_path / "big.jpg"))
    assert whole[0].shape == (3, 900, 1200)
    torch.manual_seed(3)
    a = t(small, full_size=full)
    torch.manual_seed(3)
    b = t(whole[0])
    assert torch.equal(a[-1], b[-1])  # same parameters, drawn on the full size
    for x, y in zip(a[:-1], b[:-1]):
        assert (x.float() - y.float()).abs().mean() < 3.0  # grey levels: the same view of the image


def test_build_transform_and_worker_count(monkeypatch):
    kw = dict(sizes=[8], counts=[1], scales=[(0.5, 1.0)], color_strength=1.0)
    t, aug = build_transform("pil", **kw, color_on="auto", device_type="cuda")
    assert isinstance(t, MultiCropTransform) and aug is None
    t, aug = build_transform("fast", **kw, color_on="auto", device_type="cpu")
    assert isinstance(t, FastMultiCrop) and not t.defer_color and aug is None
    t, aug = build_transform("fast", **kw, color_on="auto", device_type="cuda")
    assert t.defer_color and isinstance(aug, DeviceAugment)
    t, aug = build_transform("fast", **kw, color_on="device", device_type="cpu")
    assert t.defer_color and aug is not None
    with pytest.raises(ValueError, match="data.pipeline"):
        build_transform("dali", **kw, color_on="auto", device_type="cpu")
    with pytest.raises(ValueError, match="aug.color_on"):
        build_transform("fast", **kw, color_on="gpu", device_type="cpu")
    assert resolve_num_workers(3) == 3 and resolve_num_workers(0) == 0
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert resolve_num_workers(-1) == 7
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert resolve_num_workers(-1) == 16  # capped
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    assert resolve_num_workers(-1) == 0  # one core: load in the training process
    with pytest.raises(ValueError, match="num_workers"):
        resolve_num_workers(-2)


def test_train_one_epoch_finishes_the_augmentation_on_the_device(tmp_path, repo_root):
    """pretrain.train's loop with DeviceAugment: the loss sees the worker path's crops, an
    unreadable file is skipped and counted."""
    import os
    from torch import nn
    from common.config import load_config
    from pretrain.data import EpochSampler
    from pretrain.train import train_one_epoch
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.jpg"))
        _scene(48, 48, seed=i).save(paths[-1])
    paths.append(str(tmp_path / "broken.jpg"))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    kw = dict(sizes=[24, 12], counts=[2, 1], scales=[(0.14, 1.0), (0.05, 0.14)])
    sampler = EpochSampler(4, batch_size=2, seed=3)
    loader = torch.utils.data.DataLoader(ImageDataset(paths, FastMultiCrop(**kw, defer_color=True)), batch_size=2,
                                         sampler=sampler, collate_fn=collate_skip_bad)
    model, seen = nn.Linear(1, 1), []

    def loss_fn(crops, epoch):
        seen.append(crops)
        return model.weight.sum() * sum(c.mean() for c in crops), torch.eye(2)

    cfg = load_config(os.path.join(repo_root, "pretrain", "configs", "synthetic.yaml"),
                      [f"out={tmp_path}", "swav.freeze_prototypes_iters=0"])
    stats_ = train_one_epoch(cfg, model=model, loss_fn=loss_fn, loader=loader,
                             optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                             scaler=torch.amp.GradScaler("cpu", enabled=False), lrs=np.full(2, 0.1), epoch=0,
                             start_iter=0, iters_per_epoch=2, device=torch.device("cpu"),
                             memory_format=torch.contiguous_format, amp_dtype=None,
                             writer=type("W", (), {"write": lambda self, r: None})(), save=lambda step: None,
                             guard=CollapseGuard("swav", 1.0, tol=0.0, min_spread=0.0, patience=0),
                             after_step=lambda step: None, device_aug=DeviceAugment())
    assert stats_["skipped"] == 1 and stats_["images"] == 3
    worker = ImageDataset(paths, FastMultiCrop(**kw))
    expected = [s for s in (worker[k] for k in sampler) if s is not None]
    got = [[c[j] for c in batch] for batch in seen for j in range(batch[0].shape[0])]
    assert len(got) == 3
    for e, g in zip(expected, got):
        for a, b in zip(e, g):
            assert b.dtype == torch.float32
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
