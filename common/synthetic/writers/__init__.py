"""Writers of the synthetic benchmark's miniature dataset copies (issue 3), one module per dataset family.

``WRITERS`` maps each ``--only`` name to its ``Writer``: ``folder`` under the output directory;
``plan(cfg, seed) -> jobs`` (cheap, picklable dicts with a unique ``key``); ``make(ctx, out, cfg, job)
-> record`` (renders one sample and writes its per-sample files; runs in a worker); ``finish(out, cfg,
jobs, records, seed) -> dict`` (writes the annotation / split files; the dict goes to the manifest).
"""
import functools
from collections import namedtuple

from common.synthetic.writers import (affectnet, au, face3d, landmarks2d, landmarks2d_mat, probe, recognition,
                                      unlabelled)

Writer = namedtuple("Writer", "folder plan make finish")


def _ijb(variant):
    return Writer(recognition.FOLDERS_IJB[variant], functools.partial(recognition.plan_ijb, variant),
                  functools.partial(recognition.make_ijb, variant), functools.partial(recognition.finish_ijb, variant))


WRITERS = {
    "300w": Writer(landmarks2d.FOLDER_300W, landmarks2d.plan_300w, landmarks2d.make_300w, landmarks2d.finish_300w),
    "wflw": Writer(landmarks2d.FOLDER_WFLW, landmarks2d.plan_wflw, landmarks2d.make_wflw, landmarks2d.finish_wflw),
    "aflw19": Writer(landmarks2d_mat.FOLDER_AFLW, landmarks2d_mat.plan_aflw19, landmarks2d_mat.make_aflw19,
                     landmarks2d_mat.finish_aflw19),
    "cofw68": Writer(landmarks2d_mat.FOLDER_COFW, landmarks2d_mat.plan_cofw68, landmarks2d_mat.make_cofw68,
                     landmarks2d_mat.finish_cofw68),
    "vggface2": Writer(recognition.FOLDER_VGGFACE2, recognition.plan_vggface2, recognition.make_vggface2,
                       recognition.finish_vggface2),
    "ijbb": _ijb("ijbb"),
    "ijbc": _ijb("ijbc"),
    "disfa": Writer(au.FOLDER_DISFA, au.plan_disfa, au.make_disfa, au.finish_disfa),
    "bp4d": Writer(au.FOLDER_BP4D, au.plan_bp4d, au.make_bp4d, au.finish_bp4d),
    "affectnet": Writer(affectnet.FOLDER, affectnet.plan_affectnet, affectnet.make_affectnet,
                        affectnet.finish_affectnet),
    "300w_lp": Writer(face3d.FOLDER_LP, face3d.plan_300w_lp, face3d.make_300w_lp, face3d.finish_300w_lp),
    "aflw2000_3d": Writer(face3d.FOLDER_AFLW2000, face3d.plan_aflw2000, face3d.make_aflw2000, face3d.finish_aflw2000),
    "florence": Writer(face3d.FOLDER_FLORENCE, face3d.plan_florence, face3d.make_florence, face3d.finish_florence),
    "unlabelled": Writer(unlabelled.FOLDER, unlabelled.plan_unlabelled, unlabelled.make_unlabelled,
                         unlabelled.finish_unlabelled),
    "probe": Writer(probe.FOLDER, probe.plan_probe, probe.make_probe, probe.finish_probe),
}
