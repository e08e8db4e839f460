"""Face detection shared by the tasks (paper App. A.1, App. C: detect, then crop): the `Detector`
interface (``base.py``) and MTCNN (``mtcnn.py``) with its offline weights (``mtcnn_weights.py``).

Used by pretrain/curate (Flickr-Face crops) and au_intensity/boxes.py (DISFA / BP4D face boxes).

    python -m common.face_detect --fetch-mtcnn [--cache DIR]
"""
