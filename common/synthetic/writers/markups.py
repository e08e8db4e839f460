"""Landmark markups derived from the renderer's iBUG-68 points (paper §4.2 datasets): WFLW-98, AFLW-19, COFW-29.

Every derived point is a fixed affine combination of the 68 rendered points (each matrix row sums to 1),
so it moves with the face exactly as the rendered geometry does, and a horizontal flip commutes with the
conversion under the flip permutations of ``common.landmark_schemes`` (checked in the tests).

Layouts (0-based), from shared/research/anchors_landmarks_3d.md §1.3–1.5:
- WFLW-98: 0–32 contour, 33–41 / 42–50 brows (upper edge, then lower edge), 51–54 nose bridge,
  55–59 nose base, 60–67 / 68–75 eyes (8 each), 76–87 outer lip, 88–95 inner lip, 96–97 pupils.
- AFLW-19: 0–5 brows, 6–11 eyes (outer corner, pupil, inner corner per eye), 12–14 nose (ala, tip,
  ala), 15–17 mouth (corner, centre, corner), 18 chin.
- COFW-29 (LFPW order): brow outer corners 0/1, inner 2/3, brow top/bottom 4,5 / 6,7, eye outer 8/9,
  inner 10/11, eye top/bottom 12,13 / 14,15, pupils 16/17, nose alae 18/19, nose tip 20, subnasale 21,
  mouth corners 22/23, lip centre points 24–27 (top to bottom), chin 28. [inferred from the flip pairs]
"""
import numpy as np

_EYE_R = tuple(range(36, 42))
_EYE_L = tuple(range(42, 48))


def _row(*terms):
    """One 68-long row from (weight, indices) terms; indices in a term share its weight equally."""
    row = np.zeros(68, dtype=np.float64)
    for weight, indices in terms:
        indices = (indices,) if isinstance(indices, int) else tuple(indices)
        np.add.at(row, list(indices), weight / len(indices))
    return row


def _point(i):
    return _row((1.0, i))


def _mid(i, j):
    return _row((1.0, (i, j)))


def _lower_brow(i, j, eye):
    """A point on the lower brow edge: the midpoint of brow points i, j moved 20 % towards the eye centre."""
    return _row((0.8, (i, j)), (0.2, eye))


def _wflw98():
    rows = []
    for k in range(33):  # contour: even WFLW points are the iBUG jaw points, odd ones midpoints
        rows.append(_point(k // 2) if k % 2 == 0 else _mid(k // 2, k // 2 + 1))
    rows += [_point(i) for i in range(17, 22)]                               # 33-37 right brow, upper
    rows += [_lower_brow(i, i - 1, _EYE_R) for i in (21, 20, 19, 18)]        # 38-41 lower, inner -> outer
    rows += [_point(i) for i in range(22, 27)]                               # 42-46 left brow, upper
    rows += [_lower_brow(i, i - 1, _EYE_L) for i in (26, 25, 24, 23)]        # 47-50 lower, outer -> inner
    rows += [_point(i) for i in range(27, 36)]                               # 51-59 nose
    for c in (36, 42):                                                       # 60-67, 68-75 eyes
        rows += [_point(c), _point(c + 1), _mid(c + 1, c + 2), _point(c + 2), _point(c + 3),
                 _point(c + 4), _mid(c + 4, c + 5), _point(c + 5)]
    rows += [_point(i) for i in range(48, 68)]                               # 76-95 lips
    rows += [_row((1.0, _EYE_R)), _row((1.0, _EYE_L))]                       # 96, 97 pupils
    return np.stack(rows)


def _aflw19():
    rows = [_point(17), _point(19), _point(21), _point(22), _point(24), _point(26),
            _point(36), _row((1.0, _EYE_R)), _point(39), _point(42), _row((1.0, _EYE_L)), _point(45),
            _point(31), _point(30), _point(35), _point(48), _mid(51, 57), _point(54), _point(8)]
    return np.stack(rows)


def _cofw29():
    rows = [_point(17), _point(26), _point(21), _point(22),
            _point(19), _lower_brow(19, 19, _EYE_R), _point(24), _lower_brow(24, 24, _EYE_L),
            _point(36), _point(45), _point(39), _point(42),
            _mid(37, 38), _mid(40, 41), _mid(43, 44), _mid(46, 47),
            _row((1.0, _EYE_R)), _row((1.0, _EYE_L)),
            _point(31), _point(35), _point(30), _point(33),
            _point(48), _point(54), _point(51), _point(62), _point(66), _point(57), _point(8)]
    return np.stack(rows)


MATRICES = {98: _wflw98(), 19: _aflw19(), 29: _cofw29()}


def convert(points68, n_points):
    """(68, D) iBUG points -> (n_points, D) points of the WFLW-98 / AFLW-19 / COFW-29 markup."""
    if n_points not in MATRICES:
        raise ValueError(f"no conversion from 68 to {n_points} landmarks; known: {sorted(MATRICES)}")
    return MATRICES[n_points] @ np.asarray(points68, dtype=np.float64)


def convert_visibility(visible68, n_points):
    """A derived point is visible when every iBUG point it is built from is visible."""
    used = MATRICES[n_points] > 0                                            # (n_points, 68)
    return ~np.any(used & ~np.asarray(visible68, dtype=bool)[None, :], axis=1)
