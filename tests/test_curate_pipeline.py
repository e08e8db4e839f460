"""The whole Flickr-Face chain on generated photos: download (local server) -> detect -> crop ->
de-duplicate -> pre-training list."""
import io
import json

import numpy as np
from PIL import Image

from common.subsample import load_keys
from pretrain.curate import crop, dedup, flickr, lists
from test_curate_detector import astronaut, mtcnn_weights
from test_curate_flickr import KEY, FlickrLike, photo


def _photos():
    """Photos of one real face (scikit-image's astronaut) pasted with different scales, places,
    flips and rotations on smooth random backgrounds, plus an exact copy, a JPEG re-encode and a
    photo with no face."""
    face = Image.fromarray(astronaut()).crop((130, 10, 320, 230))

    def compose(seed, scale, pos, flip=False, rot=0):
        bg = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (6, 8, 3), dtype=np.uint8))
        bg = bg.resize((320, 240), Image.Resampling.BICUBIC)
        f = face.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else face
        f = f.rotate(rot, resample=Image.Resampling.BICUBIC, fillcolor=(90, 90, 90)) if rot else f
        bg.paste(f.resize((int(190 * scale), int(220 * scale)), Image.Resampling.BICUBIC), pos)
        return bg

    def jpeg(img, quality=92):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        return buf.getvalue()

    first = compose(1, 0.8, (40, 30))
    empty = Image.fromarray(np.random.default_rng(9).integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((320, 240))
    return {"2001": jpeg(first), "2002": jpeg(compose(2, 0.9, (120, 20), flip=True)),
            "2003": jpeg(compose(3, 0.7, (150, 50), rot=12)), "2004": jpeg(compose(4, 0.85, (20, 10), True, -10)),
            "2005": jpeg(first), "2006": jpeg(first, quality=60), "2007": jpeg(empty)}


def test_download_detect_crop_dedup_list(tmp_path, monkeypatch):
    photos = _photos()

    def content(base):
        catalogue = {"face": [photo(pid, "4", url_l=f"{base}/img/{pid}.jpg") for pid in sorted(photos)]}
        return catalogue, {f"/img/{pid}.jpg": data for pid, data in photos.items()}

    site = FlickrLike(content)
    try:
        monkeypatch.setenv("FLICKR_API_KEY", KEY)
        (tmp_path / "tags.txt").write_text("face\n")
        raw, crops, dd, out = tmp_path / "raw", tmp_path / "crops", tmp_path / "dedup", tmp_path / "flickr_face.txt"
        flickr.main(["--tags", str(tmp_path / "tags.txt"), "--out", str(raw), "--api-base",
                     f"{site.base}/services/rest/", "--per-page", "3", "--api-interval", "0",
                     "--download-interval", "0", "--workers", "2"])
    finally:
        site.server.shutdown()
        site.server.server_close()
    assert sorted(p.name for p in (raw / "images").rglob("*.jpg")) == [f"{pid}.jpg" for pid in sorted(photos)]

    crop.main(["--images", str(raw / "images"), "--out", str(crops), "--detector", "mtcnn",
               "--weights", str(mtcnn_weights()), "--max-side", "0"])
    summary = json.loads((crops / "summary.json").read_text())
    assert (summary["images"], summary["faces"], summary["images_with_faces"], summary["unreadable"]) == (7, 6, 6, 0)
    hist = json.loads((crops / "face_sizes.json").read_text())
    assert sum(hist["counts"]) == 6 and (crops / "face_sizes.png").stat().st_size > 1000
    records = {r["source"]: r for r in map(json.loads, (crops / "manifest.jsonl").read_text().splitlines())}
    assert records["07/2007.jpg"]["faces"] == []
    for rec in records.values():
        for face in rec["faces"]:
            assert Image.open(crops / face["crop"]).size == (256, 256)
            box = np.array(face["landmarks_crop"])  # eyes above the mouth, inside the crop
            assert (box > 0).all() and (box < 256).all() and box[:2, 1].max() < box[3:, 1].min()

    dedup.main(["--images", str(crops / "crops"), "--out", str(dd)])
    report = json.loads((dd / "report.json").read_text())
    assert (report["n"], report["exact_duplicates"], report["near_duplicates"], report["kept"]) == (6, 1, 1, 4)
    assert report["redundancy"]["0.95"] == 3 / 6  # the first photo and its two copies
    removed = {r["path"].rsplit("/", 1)[-1]: r for r in map(json.loads, (dd / "removed.jsonl").read_text().splitlines())}
    assert {k: v["reason"] for k, v in removed.items()} == {"2005_0.jpg": "exact", "2006_0.jpg": "near"}
    assert all(v["duplicate_of"].endswith("2001_0.jpg") for v in removed.values())

    lists.main(["flickr-face", "--crops", str(crops), "--kept", str(dd / "kept.txt"), "--out", str(out)])
    listed = load_keys(out)
    assert [p.rsplit("/", 1)[-1] for p in listed] == ["2001_0.jpg", "2002_0.jpg", "2003_0.jpg", "2004_0.jpg"]
    assert all(Image.open(p).size == (256, 256) for p in listed)
