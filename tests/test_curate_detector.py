"""Face detectors: MTCNN (common/face_detect) on a real face, RetinaFace layout and decoding (pretrain/curate)."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.face_detect import mtcnn as mt
from common.face_detect.mtcnn_weights import MTCNN_FILES, extract_mtcnn_weights, fetch_mtcnn
from pretrain.curate import retinaface as rf
from pretrain.curate.detector import build_detector
from pretrain.curate.image_io import crop_face, to_crop

CACHE = Path(os.path.expanduser("~/.cache/facerep"))
# Astronaut (scikit-image data, 512x512): MTCNN's 5 points, checked by eye on a drawn overlay to
# sit on the eye centres, the nose tip and the mouth corners.
ASTRONAUT_POINTS = np.array([[203.4, 101.2], [246.9, 103.4], [224.5, 129.2], [202.0, 139.7], [245.2, 141.8]])
ASTRONAUT_BOX = np.array([180.6, 60.0, 266.9, 174.1])


def mtcnn_weights() -> Path:
    """The MTCNN weight folder, fetched from the facenet-pytorch wheel on first use."""
    folder = CACHE / "mtcnn"
    if not all((folder / n).is_file() for n in MTCNN_FILES):
        try:
            fetch_mtcnn(folder)
        except RuntimeError as err:
            pytest.skip(f"cannot download the facenet-pytorch 2.6.0 wheel from PyPI: {err}")
    return folder


def astronaut() -> np.ndarray:
    """scikit-image's astronaut photo, read from the scikit-image wheel (the package is not installed)."""
    png = CACHE / "astronaut.png"
    if not png.is_file():
        wheels = CACHE / "wheels"
        if not list(wheels.glob("scikit_image-*.whl")):
            done = subprocess.run([sys.executable, "-m", "pip", "download", "scikit-image", "--no-deps",
                                   "--only-binary", ":all:", "-d", str(wheels), "--quiet"], capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot download the scikit-image wheel from PyPI: {done.stderr.strip()[-300:]}")
        with zipfile.ZipFile(sorted(wheels.glob("scikit_image-*.whl"))[-1]) as zf:
            data = zf.read("skimage/data/astronaut.png")
        png.parent.mkdir(parents=True, exist_ok=True)
        tmp = png.with_name(f".astronaut.{os.getpid()}.png")
        tmp.write_bytes(data)
        os.replace(tmp, png)
    return np.asarray(Image.open(png).convert("RGB"))


@pytest.fixture(scope="module")
def mtcnn():
    return build_detector("mtcnn", mtcnn_weights())


def test_mtcnn_astronaut_one_face_points_and_190px_crop(mtcnn):
    img = astronaut()
    boxes, scores, points = mtcnn.detect([img])[0]
    assert boxes.shape == (1, 4) and scores.shape == (1,) and points.shape == (1, 5, 2)
    assert scores[0] > 0.99
    np.testing.assert_allclose(boxes[0].numpy(), ASTRONAUT_BOX, atol=6)
    np.testing.assert_allclose(points[0].numpy(), ASTRONAUT_POINTS, atol=5)
    # the crop rule puts the face box at 190 px of 256: exactly by construction, and as re-detected
    crop, region = crop_face(img, boxes[0].numpy(), 256, 190)
    assert crop.shape == (256, 256, 3)
    mapped = to_crop(boxes[0].numpy().reshape(2, 2), region).ravel()
    assert max(mapped[2] - mapped[0], mapped[3] - mapped[1]) == pytest.approx(190, abs=1e-6)
    b2, _, p2 = mtcnn.detect([crop])[0]
    assert len(b2) == 1
    assert 180 <= max(b2[0, 2] - b2[0, 0], b2[0, 3] - b2[0, 1]) <= 200
    np.testing.assert_allclose(p2[0].numpy(), to_crop(points[0].numpy(), region), atol=6)


def test_mtcnn_batch_flip_and_empty(mtcnn):
    img = astronaut()
    flipped, blank = img[:, ::-1].copy(), np.full((200, 300, 3), 128, np.uint8)
    (b, _, p), (bf, _, pf), (be, se, pe) = mtcnn.detect([img, flipped, blank])
    assert len(bf) == 1
    np.testing.assert_allclose(bf[0, [2, 0]].numpy(), 512 - b[0, [0, 2]].numpy(), atol=6)  # mirrored box
    np.testing.assert_allclose(pf[0, 0].numpy(), [512 - p[0, 1, 0].item(), p[0, 1, 1].item()], atol=6)  # eyes swap
    assert be.shape == (0, 4) and se.shape == (0,) and pe.shape == (0, 5, 2)


def test_mtcnn_box_helpers_by_hand():
    boxes = torch.tensor([[0.0, 0, 10, 10], [2, 2, 6, 6], [-50, -50, -40, -40], [0, 0, 10, 10], [2, 2, 6, 6]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.95])
    groups = torch.tensor([0, 0, 0, 1, 1])
    # the small box lies inside the big one: intersection / smaller area = 1 > 0.7 (IoU would be 0.16)
    assert mt.nms_min(boxes, scores, groups, 0.7).tolist() == [4, 0, 2]
    torch.testing.assert_close(mt._regress(torch.tensor([[10.0, 20, 30, 60]]), torch.tensor([[0.1, -0.1, 0.5, 0.0]])),
                               torch.tensor([[12.0, 16, 40, 60]]))
    torch.testing.assert_close(mt._square(torch.tensor([[10.0, 20, 30, 60]])), torch.tensor([[0.0, 20, 40, 60]]))


def test_mtcnn_weights_missing_and_wheel_extraction(tmp_path):
    with pytest.raises(FileNotFoundError, match="--fetch-mtcnn"):
        build_detector("mtcnn", tmp_path)
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for i, name in enumerate(MTCNN_FILES):
            zf.writestr(f"facenet_pytorch/data/{name}", bytes([i]) * 10)
    out = extract_mtcnn_weights(wheel, tmp_path / "cache")
    assert [(out / n).read_bytes() for n in MTCNN_FILES] == [bytes([i]) * 10 for i in range(3)]
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("facenet_pytorch/data/pnet.pt", b"x")
    with pytest.raises(FileNotFoundError, match="rnet.pt"):
        extract_mtcnn_weights(wheel, tmp_path / "cache2")
    with pytest.raises(ValueError, match="needs --weights"):
        build_detector("retinaface")


@pytest.mark.parametrize("variant,channels,keys", [
    ("resnet50", 256, ["body.conv1.weight", "body.layer4.2.bn3.running_var", "fpn.output3.0.weight"]),
    ("mobilenet0.25", 64, ["body.stage1.0.0.weight", "body.stage3.1.4.running_var", "fpn.output1.1.bias"]),
])
def test_retinaface_public_layout_loads_strictly(tmp_path, variant, channels, keys):
    torch.manual_seed(0)
    model = rf.RetinaFace(variant)
    state = model.state_dict()
    for k in keys + ["ssh3.conv7x7_3.1.weight", "fpn.merge2.0.weight", "ssh1.conv5X5_1.0.weight"]:
        assert k in state
    assert state["ClassHead.0.conv1x1.weight"].shape == (4, channels, 1, 1)
    assert state["BboxHead.1.conv1x1.weight"].shape == (8, channels, 1, 1)
    assert state["LandmarkHead.2.conv1x1.weight"].shape == (20, channels, 1, 1)
    path = tmp_path / "public.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)  # as the released files are keyed
    det = build_detector("retinaface", path)
    loaded = det.model.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    assert rf.variant_of(torch.load(path, weights_only=True)) == variant
    if variant == "mobilenet0.25":  # (a second 100 MB file for ResNet-50 would only cost time)
        torch.save({f"module.{k}": v for k, v in state.items() if k != keys[1]}, tmp_path / "broken.pth")
        with pytest.raises(ValueError, match=rf"missing \['{keys[1]}'\]"):
            build_detector("retinaface", tmp_path / "broken.pth")
        with pytest.raises(ValueError, match="unexpected"):
            rf.load_retinaface(path, variant="resnet50")
    loc, scores, landm = det.model(torch.zeros(1, 3, 64, 96))
    assert loc.shape == (1, 252, 4) and scores.shape == (1, 252) and landm.shape == (1, 252, 10)
    assert ((scores > 0) & (scores < 1)).all()


def test_retinaface_priors_and_decode():
    pri = rf.prior_boxes(64, 96)  # anchors: (8*12 + 4*6 + 2*3) locations x 2 sizes
    assert pri.shape == (252, 4)
    torch.testing.assert_close(pri[0], torch.tensor([4 / 96, 4 / 64, 16 / 96, 16 / 64]))
    torch.testing.assert_close(pri[1], torch.tensor([4 / 96, 4 / 64, 32 / 96, 32 / 64]))
    torch.testing.assert_close(pri[2], torch.tensor([12 / 96, 4 / 64, 16 / 96, 16 / 64]))
    torch.testing.assert_close(pri[24], torch.tensor([4 / 96, 12 / 64, 16 / 96, 16 / 64]))  # next row
    torch.testing.assert_close(pri[192], torch.tensor([8 / 96, 8 / 64, 64 / 96, 64 / 64]))  # stride 16
    loc = torch.zeros(252, 4)
    loc[0] = torch.tensor([1.0, -2.0, np.log(2) / 0.2, 0.0])
    landm = torch.zeros(252, 10)
    landm[0, 2:4] = torch.tensor([1.0, 1.0])
    boxes, points = rf.decode(loc, landm, pri, 64, 96)
    # prior 0: centre (4, 4), 16 px; offsets move the centre by 0.1 * 16 * (1, -2), double the width
    torch.testing.assert_close(boxes[0], torch.tensor([5.6 - 16, 0.8 - 8, 5.6 + 16, 0.8 + 8]))
    torch.testing.assert_close(boxes[1], torch.tensor([-12.0, -12.0, 20.0, 20.0]))
    torch.testing.assert_close(points[0], torch.tensor([[4.0, 4.0], [5.6, 5.6], [4.0, 4.0], [4.0, 4.0], [4.0, 4.0]]))


class _Rigged(torch.nn.Module):
    """Zero offsets, chosen anchor scores; remembers its input."""

    def __init__(self, scores):
        super().__init__()
        self.scores, self.seen = scores, None

    def forward(self, x):
        self.seen = x
        n, a = x.shape[0], self.scores.shape[0]
        return torch.zeros(n, a, 4), self.scores.expand(n, a), torch.zeros(n, a, 10)


def test_retinaface_detector_threshold_nms_and_bgr_input():
    scores = torch.full((252,), 0.01)
    scores[[1, 3, 100]] = torch.tensor([0.9, 0.8, 0.7])  # anchors 1 and 3 overlap with IoU 0.6 > 0.4
    model = _Rigged(scores)
    det = rf.RetinaFaceDetector(model, score_threshold=0.5)
    img = np.zeros((64, 96, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30
    boxes, s, pts = det.detect([img])[0]
    torch.testing.assert_close(s, torch.tensor([0.9, 0.7]))
    pri = rf.prior_boxes(64, 96)[100]
    centre, half = pri[:2] * torch.tensor([96, 64]), pri[2:] * torch.tensor([96, 64]) / 2
    torch.testing.assert_close(boxes, torch.stack([torch.tensor([-12.0, -12.0, 20.0, 20.0]),
                                                   torch.cat([centre - half, centre + half])]))
    assert pts.shape == (2, 5, 2)
    torch.testing.assert_close(model.seen[0, :, 0, 0], torch.tensor([30 - 104.0, 20 - 117.0, 10 - 123.0]))
