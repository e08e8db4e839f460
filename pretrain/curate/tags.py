"""The Flickr-Face query: the paper's 100 tags (App. C) and Flickr's licence ids."""
import os

# App. C, in the paper's order ("images that have one of the following 100 tags").
FLICKR_FACE_TAGS = (
    "human", "people", "person", "face", "fashion", "portrait", "emotion", "expression", "affect",
    "happy", "sad", "anger", "angry", "smile", "laugh", "joy", "surprise", "disgust", "confused",
    "fear", "horror", "adult", "lady", "ladies", "beauty", "gentleman", "gentlemen", "man", "men",
    "woman", "women", "baby", "infant", "toddler", "kid", "child", "children", "senior", "father",
    "mother", "dad", "mom", "elderly", "grandfather", "grandmother", "grandpa", "grandma",
    "grandparent", "ancestor", "40s", "50s", "60s", "70s", "80s", "90s", "couple", "family",
    "brother", "sister", "sibling", "cousin", "wedding", "marriage", "funeral", "party", "formal",
    "boy", "girl", "teen", "teenager", "youth", "friend", "classmate", "group photo", "team",
    "gathering", "teacher", "professor", "lecturer", "coach", "tutor", "worker", "boss",
    "celebrity", "sport", "self", "selfie", "photoshoot", "concert", "gigs", "band", "dance",
    "marathon", "passenger", "army", "soldier", "marching", "military", "protest", "crowds",
)

# flickr.photos.licenses.getInfo. Ids 0-10 as documented there; 11-16 are the CC 4.0 licences
# Flickr added later (not verified here: the downloader logs the live getInfo names of the ids used).
LICENSES = {
    0: "All Rights Reserved", 1: "CC BY-NC-SA 2.0", 2: "CC BY-NC 2.0", 3: "CC BY-NC-ND 2.0",
    4: "CC BY 2.0", 5: "CC BY-SA 2.0", 6: "CC BY-ND 2.0", 7: "No known copyright restrictions",
    8: "United States Government Work", 9: "CC0 1.0", 10: "Public Domain Mark 1.0",
    11: "CC BY 4.0", 12: "CC BY-SA 4.0", 13: "CC BY-ND 4.0", 14: "CC BY-NC 4.0",
    15: "CC BY-NC-SA 4.0", 16: "CC BY-NC-ND 4.0",
}

# Presets for --licenses. Default "cc-reuse": the Creative Commons licences/tools that allow any
# reuse including adaptation (a face crop is an adaptation, so ND is out) and commercial use:
# CC BY, CC BY-SA (2.0, 4.0), CC0, Public Domain Mark. "frl" is the deleted FRL scraper's
# LICENSES=4,9 (anchors_frl_swav.md §1.9). "cc-all" adds the NC and ND variants.
LICENSE_PRESETS = {
    "cc-reuse": (4, 5, 9, 10, 11, 12),
    "frl": (4, 9),
    "cc-all": (1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 14, 15, 16),
}


def parse_licenses(spec: str) -> tuple:
    """A preset name or a comma list of licence ids -> sorted tuple of ints."""
    if spec in LICENSE_PRESETS:
        return tuple(sorted(LICENSE_PRESETS[spec]))
    try:
        ids = sorted({int(s) for s in spec.split(",") if s.strip()})
    except ValueError:
        raise ValueError(f"--licenses: {spec!r} is neither a preset {sorted(LICENSE_PRESETS)} "
                         "nor a comma list of licence ids") from None
    unknown = [i for i in ids if i not in LICENSES]
    if not ids or unknown:
        raise ValueError(f"--licenses: unknown licence ids {unknown or spec!r}; known: {sorted(LICENSES)}")
    return tuple(ids)


def read_list(path, what="tags") -> tuple:
    """Entries of a text file, one per line, first occurrence order; blanks and '#' lines ignored."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    with open(path, encoding="utf-8") as f:
        items = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    if not items:
        raise ValueError(f"{path}: no {what} in the file")
    return tuple(dict.fromkeys(items))
