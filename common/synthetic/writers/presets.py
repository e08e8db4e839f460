"""Sizes of the synthetic benchmark's presets (issue 3): ``tiny`` for the pipeline tests, ``small`` for the
held-out learning tests (issues 6-9), ``demo`` for ``make demo``.

Counts are the miniature copies' own (the real counts are in shared/research); split sizes that a
real protocol hard-codes (e.g. AFLW-19's 20000 training faces) are recorded in ``manifest.json``.
Canvas sizes are (H, W) of the whole "photos" the render is placed in, before a random jitter.
A dataset entry may set its own ``render_size``; DISFA / BP4D take ``zoom`` (face scale in the render) and
``canvas`` (H, W of a frame larger than the render, which then holds the face in a part of it, as the real
1024x768 frames do: the BP4D copies of ``tiny`` and ``small`` have one, for au_intensity/boxes.py's tests).

``demo`` renders at 64 px (the demo's fine-tune size) so that 8,000 unlabelled faces, a 1,000-face probe
set and labelled sets whose 2 % holds >= 30 faces (1,500 300W, 1,500 DISFA and 1,520 300W-LP training
faces) render in about two minutes on 2 cores.

``small`` is sized so that a from-scratch ResNet-18 run of one to three minutes on one CPU core
generalises to the held-out split (measured in the tests that use it): 240 300W training faces, 80
VGGFace2 identities x 6 against an IJB-B copy of 224 genuine / 4,480 impostor pairs, 24 DISFA frames
per subject, 1,600 AffectNet faces at 128 px (400 were too few for valence: see tests/test_emotion.py),
1,600 300W-LP crops, 1,024 unlabelled faces and a 480-face probe set at 32 px (the pre-training learning
test). Each test writes only what it needs (``--only``); all of it takes about 50 s on
2 cores.
"""

PRESETS = {
    "tiny": {
        "render_size": 96, "workers": 1,
        "300w": {"afw": 2, "helen_trainset": 2, "lfpw_trainset": 2, "helen_testset": 2, "lfpw_testset": 1,
                 "ibug": 2, "indoor": 1, "outdoor": 1, "canvas": (128, 160)},
        "wflw": {"train": 6, "test": 6, "canvas": (120, 140)},
        "aflw19": {"train": 8, "test": 6, "canvas": (120, 150)},
        "cofw68": {"test": 4, "canvas": (110, 110)},
        "vggface2": {"train_ids": 4, "test_ids": 2, "per_id": 3},
        "ijbb": {"subjects": 3, "max_templates": 2, "impostor_per_genuine": 2},
        "ijbc": {"subjects": 3, "max_templates": 2, "impostor_per_genuine": 2},
        "disfa": {"frames": 2},
        "bp4d": {"tasks": 1, "frames": 3, "uncoded_rate": 0.1, "canvas": (144, 192)},
        "affectnet": {"train": 12, "val": 8},
        "300w_lp": {"sources": 1, "views": 2, "canvas": 128},
        "aflw2000_3d": {"images": 6, "canvas": 128},
        "florence": {"subjects": 2, "yaws": (-40, 0, 40), "pitches": (0,)},
        "unlabelled": {"images": 24, "corrupt": True},
        "probe": {"identities": 4, "per_id": 3},
    },
    "small": {
        "render_size": 64, "workers": 2,
        "300w": {"afw": 60, "helen_trainset": 100, "lfpw_trainset": 80, "helen_testset": 25, "lfpw_testset": 15,
                 "ibug": 15, "indoor": 5, "outdoor": 5, "canvas": (86, 106)},
        "wflw": {"train": 6, "test": 6, "canvas": (80, 94)},
        "aflw19": {"train": 8, "test": 6, "canvas": (80, 100)},
        "cofw68": {"test": 4, "canvas": (74, 74)},
        "vggface2": {"train_ids": 80, "test_ids": 4, "per_id": 6},
        "ijbb": {"subjects": 60, "max_templates": 4, "impostor_per_genuine": 20},
        "ijbc": {"subjects": 60, "max_templates": 4, "impostor_per_genuine": 20},
        "disfa": {"frames": 24, "zoom": 1.8},
        "bp4d": {"tasks": 2, "frames": 8, "uncoded_rate": 0.05, "zoom": 1.4, "canvas": (96, 128)},
        "affectnet": {"train": 1600, "val": 200, "render_size": 128},
        "300w_lp": {"sources": 100, "views": 2, "canvas": 86},
        "aflw2000_3d": {"images": 60, "canvas": 86},
        "florence": {"subjects": 2, "yaws": (-40, 0, 40), "pitches": (0,)},
        "unlabelled": {"images": 1024, "corrupt": False, "render_size": 32},
        "probe": {"identities": 60, "per_id": 8, "render_size": 32},
    },
    "demo": {                                           # make demo: 2 % of each labelled set is >= 30 faces
        "render_size": 64, "workers": 2,
        "300w": {"afw": 300, "helen_trainset": 800, "lfpw_trainset": 400, "helen_testset": 100, "lfpw_testset": 60,
                 "ibug": 40, "indoor": 10, "outdoor": 10, "canvas": (86, 106)},
        "wflw": {"train": 6, "test": 6, "canvas": (80, 94)},
        "aflw19": {"train": 8, "test": 6, "canvas": (80, 100)},
        "cofw68": {"test": 4, "canvas": (74, 74)},
        "vggface2": {"train_ids": 40, "test_ids": 10, "per_id": 8},
        "ijbb": {"subjects": 20, "max_templates": 3, "impostor_per_genuine": 4},
        "ijbc": {"subjects": 20, "max_templates": 3, "impostor_per_genuine": 4},
        "disfa": {"frames": 125, "zoom": 1.8},
        "bp4d": {"tasks": 2, "frames": 4, "uncoded_rate": 0.05, "zoom": 1.8},
        "affectnet": {"train": 300, "val": 80, "render_size": 128},
        "300w_lp": {"sources": 190, "views": 2, "canvas": 86},
        "aflw2000_3d": {"images": 200, "canvas": 86},
        "florence": {"subjects": 2, "yaws": (-40, 0, 40), "pitches": (0,)},
        "unlabelled": {"images": 8000, "corrupt": False},
        "probe": {"identities": 100, "per_id": 10},
    },
}
