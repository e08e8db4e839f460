"""Action units -> emotion labels of the synthetic AffectNet copy (issue 3): 8 classes, valence, arousal.

Classes use the AffectNet order (Mollahosseini et al., IEEE TAC 2017): 0 neutral, 1 happy, 2 sad,
3 surprise, 4 fear, 5 disgust, 6 anger, 7 contempt. Each non-neutral class has its EMFACS
prototype (Friesen & Ekman, *EMFACS-7*, 1983; Ekman, Friesen & Hager, *FACS Investigator's
Guide*, 2002; the same table is reproduced in Wikipedia's "Facial Action Coding System"):

    happy 6+12, sad 1+4+15, surprise 1+2+5+26, fear 1+2+4+5+20+26, disgust 9+15(+16),
    anger 4+5+7+23, contempt R12+R14 (unilateral, subject's right: keys ``right(12)``, ``right(14)``).

Mapping. With x_a = intensity_a / 5 in [0, 1], the evidence for class c with prototype P_c is

    score_c = (sum_{a in P_c} x_a - 0.5 * sum_{a not in P_c} x_a) / |P_c|

(AUs outside the prototype count against it, so fear, whose prototype contains surprise's, wins
only when 4 and 20 are present). The class is argmax_c score_c, or neutral when the best score is
below ``NEUTRAL_BELOW`` (a mean prototype intensity under 0.4 on the 0-5 scale).
Valence and arousal place each class on Russell's circumplex (Russell, J. Pers. Soc. Psychol.
1980; class positions as in the AffectNet paper's valence-arousal figure) and average them with
the clipped scores as weights: (v, a) = sum_c max(score_c, 0) * centre_c / max(1, sum_c max(score_c, 0)),
a convex combination (weights sum to at most 1) of points in [-1, 1]^2, hence itself in [-1, 1]^2;
zero activation gives (0, 0), the neutral centre.
"""

import numpy as np

from common.synthetic.face_model import right

CLASSES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
PROTOTYPES = {
    1: (6, 12),
    2: (1, 4, 15),
    3: (1, 2, 5, 26),
    4: (1, 2, 4, 5, 20, 26),
    5: (9, 15, 16),
    6: (4, 5, 7, 23),
    7: (right(12), right(14)),
}
OPTIONAL = {5: (16,)}  # disgust: AU16 appears in some of its EMFACS variants only
# (valence, arousal) of each class on the circumplex
CENTRES = {1: (0.8, 0.45), 2: (-0.7, -0.35), 3: (0.15, 0.85), 4: (-0.6, 0.75), 5: (-0.7, 0.35),
           6: (-0.6, 0.65), 7: (-0.5, 0.25)}
NEUTRAL_BELOW = 0.08
PENALTY = 0.5


def class_scores(aus):
    """{class: score} for classes 1-7 (see the module docstring)."""
    x = {int(a): float(np.clip(v, 0.0, 5.0)) / 5.0 for a, v in (aus or {}).items()}
    total = sum(x.values())
    scores = {}
    for c, proto in PROTOTYPES.items():
        inside = sum(x.get(a, 0.0) for a in proto)
        scores[c] = (inside - PENALTY * (total - inside)) / len(proto)
    return scores


def aus_to_emotion(aus):
    """(expression in 0..7, valence in [-1, 1], arousal in [-1, 1]) of an {AU: intensity 0-5} dict."""
    scores = class_scores(aus)
    best = max(scores, key=lambda c: (scores[c], -c))
    expression = best if scores[best] >= NEUTRAL_BELOW else 0
    weights = {c: max(s, 0.0) for c, s in scores.items()}
    norm = max(1.0, sum(weights.values()))
    valence = sum(w * CENTRES[c][0] for c, w in weights.items()) / norm
    arousal = sum(w * CENTRES[c][1] for c, w in weights.items()) / norm
    return int(expression), float(np.clip(valence, -1, 1)), float(np.clip(arousal, -1, 1))


def prototype_aus(expression, intensity, rng):
    """A random {AU: intensity} for AffectNet class ``expression`` at strength ``intensity`` (0-5).

    Each prototype AU gets ``intensity * U(0.75, 1)``; the optional disgust AU16 is drawn with
    probability 1/2. Neutral returns ``{}``. For ``intensity`` >= 1 ``aus_to_emotion`` maps the
    result back to ``expression``.
    """
    expression = int(expression)
    if expression == 0:
        return {}
    if expression not in PROTOTYPES:
        raise ValueError(f"expression must be an AffectNet class 0-7, got {expression}")
    aus = {}
    for au in PROTOTYPES[expression]:
        if au in OPTIONAL.get(expression, ()) and rng.random() < 0.5:
            continue
        aus[au] = float(np.clip(intensity * rng.uniform(0.75, 1.0), 0.0, 5.0))
    return aus
