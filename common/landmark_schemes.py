"""Landmark layouts used across tasks (paper §4.2): flip permutations and eye-corner indices.

Flip permutations are 0-based; ``perm[i]`` is the source index of output landmark ``i`` after a
horizontal flip. They are derived from the pair lists of HRNet-Facial-Landmark-Detection
``lib/utils/transforms.py::MATCHED_PARTS``; the 68-point one equals face-alignment's
``shuffle_lr`` (shared/research/anchors_landmarks_3d.md §1.5). Each is an involution.
"""

FLIP_PERM = {
    68: (list(range(16, -1, -1))
         + list(range(26, 16, -1))
         + [27, 28, 29, 30]
         + [35, 34, 33, 32, 31]
         + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
         + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]),
    98: ([32 - i for i in range(33)]
         + [46, 45, 44, 43, 42, 50, 49, 48, 47, 37, 36, 35, 34, 33, 41, 40, 39, 38]
         + [51, 52, 53, 54, 59, 58, 57, 56, 55]
         + [72, 71, 70, 69, 68, 75, 74, 73, 64, 63, 62, 61, 60, 67, 66, 65]
         + [82, 81, 80, 79, 78, 77, 76, 87, 86, 85, 84, 83, 92, 91, 90, 89, 88, 95, 94, 93, 97, 96]),
    19: [5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 14, 13, 12, 17, 16, 15, 18],
    29: [1, 0, 3, 2, 6, 7, 4, 5, 9, 8, 11, 10, 14, 15, 12, 13, 17, 16, 19, 18, 20, 21, 23, 22,
         24, 25, 26, 27, 28],
    5: [1, 0, 2, 4, 3],  # left eye, right eye, nose tip, left mouth corner, right mouth corner
}

# Outer eye corners used by the inter-ocular NME (300W: 36/45; WFLW: 60/72; COFW-29: 8/9 as in
# HRNet's evaluation.py; AFLW-19: 6/11 as in FaRL's scorer).
OUTER_EYE_CORNERS = {68: (36, 45), 98: (60, 72), 29: (8, 9), 19: (6, 11)}

# iBUG-68 index groups, in iBUG order.
IBUG68_GROUPS = {
    "jaw": range(0, 17), "right_brow": range(17, 22), "left_brow": range(22, 27),
    "nose_bridge": range(27, 31), "nose_base": range(31, 36), "right_eye": range(36, 42),
    "left_eye": range(42, 48), "outer_lip": range(48, 60), "inner_lip": range(60, 68),
}


def flip_permutation(n_points):
    """The horizontal-flip permutation for an ``n_points`` layout, or a clear error."""
    if n_points not in FLIP_PERM:
        raise ValueError(f"no flip permutation for {n_points} landmarks; known: {sorted(FLIP_PERM)}")
    return list(FLIP_PERM[n_points])
