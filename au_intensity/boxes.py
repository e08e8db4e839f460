"""Face boxes for the DISFA / BP4D frames (paper §5.3; the community crops the face, e.g.
CVI-SZU/ME-GraphAU tool/README.md trains on face crops): MTCNN on every labelled frame, smoothed
over time, gaps filled, written as the ``data.boxes`` CSV that ``au_intensity.data.read_boxes`` reads.

    python -m au_intensity.boxes --root data/DISFA --dataset disfa [--out CSV] [--device cuda]

Per video (a DISFA subject, a BP4D subject/task), frames in frame-number order:
  1. detect: MTCNN (common/face_detect, weights from ``python -m common.face_detect --fetch-mtcnn``),
     batched, keeping the face the detector scores highest in each frame; with ``--centre points``
     (default) the box keeps MTCNN's size and is re-centred on the mean of its five points (eye
     centres, nose tip, mouth corners): MTCNN's box reaches up into the forehead, so its centre sits
     0.11 face heights above the rendered face's (median over the small synthetic BP4D training subjects;
     0.03 re-centred; 90th percentile of the centre distance 0.15 -> 0.08); ``--centre box`` keeps MTCNN's box;
     the videos in which no frame has a detection are detected again at lower thresholds
     (``--retry-thresholds``, 0.4/0.5/0.5 against facenet-pytorch's 0.6/0.7/0.7; a lab video holds one face
     and the top-scoring box is kept): on the small synthetic BP4D copies of seeds 0 / 1 / 2 the first pass
     found no face in 4 / 2 / 8 videos, the retry in all but one of each (whole-frame fallback 25 / 11 / 49
     frames -> 7 / 5 / 7), its boxes as good as the first pass's (IoU > 0.5 with the true box on 98.6 / 98.8 /
     98.3 % of all frames, was 95.1 / 97.7 / 90.7 %);
  2. smooth: the box centre is the median of the detections' centres over ``--window`` (3) consecutive
     frames, which drops a one-frame outlier and follows the head; its width and height are medians over
     ``--size-window`` (25, 1 s of BP4D video): the distance to the camera changes more slowly than the head
     moves, and MTCNN's box side jitters by a few per cent from frame to frame. (One window of 7 for all four
     coordinates, the first version, dragged the centre behind the moving head of the synthetic videos: centre
     jitter against the true box 0.042 -> 0.026 of the face side with 3/25, side jitter 0.024 -> 0.021;
     au_intensity/README.md "Smoothing");
  3. fill: a frame without a detection takes the smoothed boxes of the detected frames before and
     after it, interpolated linearly in frame number ("interpolated"), or the nearest one's at the
     ends of the video ("nearest"); a video with no detection at all gets the whole frame
     ("whole_frame").
Box convention (the CSV, as the loader reads it): ``key,x1,y1,x2,y2``, key ``SN001/12`` or
``F001/T1/612`` (the label's frame number), 0-based pixel coordinates with pixel centres at integers
(common/transforms.py), x1 y1 x2 y2 the box's outer edges (MTCNN's boxes shifted by -0.5). The
loader crops the square of side ``data.box_scale`` x the longer box side about the box centre.
Default output: ``<root>/face_boxes.csv`` (the configs' ``data.boxes``), and beside it
``face_boxes.json``: frames per fallback and the settings. The counts are printed as the last line.
"""
import argparse
import json
import os
import warnings

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from au_intensity import labels as L
from au_intensity.data import BOXES_FILE, DATASETS, index_split
from common.face_crop import read_rgb, whole_image_box
from common.face_detect.mtcnn_weights import build_mtcnn
from common.files import write_json, write_text_atomic
from common.logger import log, progress

SOURCES = ("detected", "interpolated", "nearest", "whole_frame")  # fallback order, codes 0-3
PIXEL_CENTRE_SHIFT = -0.5  # MTCNN: pixel i spans [i, i + 1) (roi_align aligned=True); loader: centre at i


class _Frames(Dataset):
    """(row, HWC uint8 image or None) of each path, read by DataLoader workers."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        image = read_rgb(self.paths[i])
        return i, None if image is None else image.permute(1, 2, 0)


def detect_frames(paths, detector, *, batch_size=32, workers=4):
    """Highest-scoring detection of each image: boxes (N, 4) and its five points (N, 5, 2) in the loader's
    convention (NaN where none), image sizes (N, 2) as (height, width) (NaN where unreadable)."""
    boxes, sizes = np.full((len(paths), 4), np.nan), np.full((len(paths), 2), np.nan)
    points = np.full((len(paths), 5, 2), np.nan)
    loader = DataLoader(_Frames(paths), batch_size=batch_size, num_workers=workers, collate_fn=list)
    for batch in progress(loader, desc="detect faces", total=len(loader)):
        batch = [(i, image) for i, image in batch if image is not None]
        if not batch:
            continue
        rows = np.array([i for i, _ in batch])
        sizes[rows] = [image.shape[:2] for _, image in batch]
        found = detector.detect([image for _, image in batch])
        hit = np.array([len(b) > 0 for b, _, _ in found])
        if hit.any():
            boxes[rows[hit]] = torch.stack([b[0] for (b, _, _), h in zip(found, hit) if h]).numpy()
            points[rows[hit]] = torch.stack([p[0] for (_, _, p), h in zip(found, hit) if h]).numpy()
    return boxes + PIXEL_CENTRE_SHIFT, points + PIXEL_CENTRE_SHIFT, sizes


def centre_on_points(boxes, points):
    """``boxes`` (N, 4) moved so that their centre is the mean of ``points`` (N, 5, 2); size kept."""
    shift = points.mean(axis=1) - (boxes[:, :2] + boxes[:, 2:]) / 2
    return boxes + np.tile(shift, 2)


def running_median(values, window):
    """Median of each column of ``values`` (T, k; NaN rows = missing) over ``window`` consecutive rows centred on
    each row, ignoring NaN (NaN where a window holds no value)."""
    half = window // 2
    padded = np.pad(values, ((half, half), (0, 0)), constant_values=np.nan)
    with warnings.catch_warnings():                                      # all-NaN windows: NaN, filled later
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(np.lib.stride_tricks.sliding_window_view(padded, window, axis=0), axis=-1)


def smooth_and_fill(frames, boxes, windows, whole):
    """Per-frame boxes (T, 4) of one video and their source codes (T,) (index into SOURCES) from the
    raw detections ``boxes`` (T, 4; NaN rows = none) of ``frames`` (T,, increasing): the box centre is the
    median over ``windows[0]`` consecutive frames and its width and height over ``windows[1]`` (the head moves
    faster than its distance to the camera changes), then linear interpolation in frame number inside the
    video, nearest at its ends, ``whole`` (4,) when nothing was detected."""
    found = np.isfinite(boxes).all(axis=1)
    if not found.any():
        return np.tile(np.asarray(whole, dtype=np.float64), (len(frames), 1)), np.full(len(frames), 3)
    centre, size = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
    centre, size = running_median(centre, windows[0]), running_median(size, windows[1])
    smooth = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    known = frames[found]
    filled = np.stack([np.interp(frames, known, smooth[found, j]) for j in range(4)], axis=1)
    source = np.where(found, 0, np.where((frames > known[0]) & (frames < known[-1]), 1, 2))
    return filled, source


def video_of(keys):
    """Video ids (N,) (the key without its frame number) and frame numbers (N,) of frame keys."""
    parts = [k.rsplit("/", 1) for k in keys]
    return np.array([p[0] for p in parts]), np.array([int(p[1]) for p in parts], dtype=np.int64)


def undetected_videos(keys, boxes, sizes):
    """Rows of the readable frames of the videos in which no frame has a detection (``boxes`` NaN rows)."""
    videos, _ = video_of(keys)
    found = np.isfinite(boxes).all(axis=1)
    return np.flatnonzero(~np.isin(videos, videos[found]) & np.isfinite(sizes).all(axis=1))


def face_boxes(keys, boxes, sizes, *, windows):
    """(kept rows, boxes (M, 4), source codes (M,)) of all frames, video by video (``smooth_and_fill``);
    an unreadable image counts as a missed detection, and a video none of whose images could be read
    is left out."""
    videos, frames = video_of(keys)
    order = np.lexsort((frames, videos))                                  # by video, then frame number
    starts = np.flatnonzero(videos[order][1:] != videos[order][:-1]) + 1
    rows, out, codes = [], [], []
    for idx in np.split(order, starts):
        size = sizes[idx][np.isfinite(sizes[idx]).all(axis=1)]
        if not len(size):
            continue
        filled, source = smooth_and_fill(frames[idx], boxes[idx], windows, whole_image_box(*size[0]))
        rows.append(idx), out.append(filled), codes.append(source)
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, np.int64)
    return np.concatenate(rows), np.concatenate(out), np.concatenate(codes)


def thresholds_arg(text):
    """``--retry-thresholds``: three comma-separated numbers, or ``none`` (None)."""
    if text == "none":
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"three comma-separated numbers or none, got {text!r}")
    return values


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m au_intensity.boxes", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="dataset root (as data.root)")
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--out", help=f"CSV to write (default ROOT/{BOXES_FILE}, the configs' data.boxes)")
    parser.add_argument("--frames-dir", help="frames folder under the root (default per dataset, as data.frames_dir)")
    parser.add_argument("--frame-name", help="frame file name pattern (as data.frame_name)")
    parser.add_argument("--weights", help="MTCNN weight folder (default ~/.cache/facerep/mtcnn)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=32, help="frames per detector batch")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="image-reading processes (default: 4, at most the CPU count)")
    parser.add_argument("--min-face", type=float, default=20.0,
                        help="smallest face side in px (MTCNN's pyramid; e.g. 100 for 1024x768 frames is faster)")
    parser.add_argument("--window", type=int, default=3,
                        help="frames in the temporal median of the box centre (odd; 3 drops one-frame outliers)")
    parser.add_argument("--size-window", type=int, default=25,
                        help="frames in the temporal median of the box width and height (odd; 25 = 1 s of BP4D)")
    parser.add_argument("--retry-thresholds", type=thresholds_arg, default=(0.4, 0.5, 0.5),
                        help="MTCNN's three stage thresholds for a second pass over the videos in which the first "
                             "(0.6,0.7,0.7) found no face; 'none' skips it")
    parser.add_argument("--centre", choices=("points", "box"), default="points",
                        help="box centre: the mean of MTCNN's five points (default) or its box's")
    args = parser.parse_args(argv)
    for flag, window in (("--window", args.window), ("--size-window", args.size_window)):
        if window < 1 or window % 2 == 0:
            parser.error(f"{flag} must be a positive odd number, got {window}")
    out = args.out or os.path.join(args.root, BOXES_FILE)
    subjects = L.DISFA_SUBJECTS if args.dataset == "disfa" else L.BP4D_TRAIN + L.BP4D_DEVEL
    try:
        index = index_split(args.dataset, args.root, subjects, frames_dir=args.frames_dir,
                            frame_name=args.frame_name)
        detector = build_mtcnn(args.weights, device=args.device, min_face=args.min_face)
    except (FileNotFoundError, L.LabelFormatError, ValueError) as err:
        raise SystemExit(f"au_intensity.boxes: {err}") from None
    log(f"{args.dataset}: detecting faces in {len(index.keys)} labelled frames of {args.root} on {args.device}")
    raw, points, sizes = detect_frames(index.paths, detector, batch_size=args.batch_size, workers=args.workers)
    again = undetected_videos(index.keys, raw, sizes) if args.retry_thresholds else np.zeros(0, np.int64)
    if len(again):
        log(f"no face in {len(np.unique(video_of([index.keys[r] for r in again])[0]))} videos: detecting their "
            f"{len(again)} frames again at thresholds {args.retry_thresholds}")
        second = build_mtcnn(args.weights, device=args.device, min_face=args.min_face,
                             thresholds=args.retry_thresholds)
        raw[again], points[again], _ = detect_frames([index.paths[r] for r in again], second,
                                                     batch_size=args.batch_size, workers=args.workers)
    if args.centre == "points":
        raw = centre_on_points(raw, points)
    rows, boxes, source = face_boxes(index.keys, raw, sizes, windows=(args.window, args.size_window))
    write_text_atomic(out, "".join(f"{index.keys[r]}," + ",".join(f"{v:.1f}" for v in b) + "\n"
                                   for r, b in zip(rows, boxes)))
    counts = {name: int((source == code).sum()) for code, name in enumerate(SOURCES)}
    counts.update(frames=len(index.keys), written=len(rows), unreadable=int(np.isnan(sizes[:, 0]).sum()),
                  retried=len(again), found_on_retry=int(np.isfinite(raw[again, 0]).sum()))
    report = {"dataset": args.dataset, "root": os.path.abspath(args.root), "csv": os.path.abspath(out),
              "counts": counts, "detector": "mtcnn", "min_face": args.min_face, "thresholds": list(detector.thresholds),
              "retry_thresholds": args.retry_thresholds, "window": args.window,
              "size_window": args.size_window, "centre": args.centre,
              "box": "x1,y1,x2,y2 outer edges, 0-based pixels, pixel centres at integers; "
                     "crop side = data.box_scale x longer box side"}
    write_json(os.path.splitext(out)[0] + ".json", report)
    log(f"wrote {len(rows)} boxes to {out}")
    print(json.dumps(counts))
    return report


if __name__ == "__main__":
    main()
