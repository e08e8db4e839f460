"""The built-in synthetic face benchmark (DESIGN.md "Data"; issue 3).

A parametric 3D face model (``face_model``), a renderer (``render``) and an AU-to-emotion map
(``emotion``) produce labelled faces; the ``writers`` sub-package writes miniature copies of each
dataset the paper uses, field for field in the real on-disk format, so every loader is tested on
the format it will read. ``python -m common.synthetic --out DIR --preset {tiny,demo} --seed S``
writes, under ``DIR``:

==================  =====================================================================
``300W/``           afw, helen/{trainset,testset}, lfpw/{trainset,testset}, ibug, 300W/{01_Indoor,02_Outdoor}; .pts
``WFLW/``           WFLW_images/, WFLW_annotations/{list_98pt_rect_attr_train_test,list_98pt_test}/
``AFLW/``           AFLWinfo_release.mat, data/flickr/{0,2,3}/imageNNNNN.jpg
``COFW68/``         COFW_test.mat, COFW68_Data/{test_annotations/,cofw68_test_bboxes.mat}
``VGGFace2/``       train/, test/, train_list.txt, test_list.txt, meta/identity_meta.csv, bb_landmark/
``IJBB/ IJBC/``     loose_crop/, meta/ijb?_{face_tid_mid,template_pair_label,name_5pts_score}.txt
``DISFA/``          ActionUnit_Labels/SNnnn/SNnnn_auN.txt, Frames_LeftCamera/SNnnn/<frame>.jpg
``BP4D/``           "AU Intensity Codes3.0"/AUnn/<subject>_<task>_AUnn.csv, BP4D-training/<subject>/<task>/<frame>.jpg
``AffectNet/``      Manually_Annotated_file_lists/{training,validation}.csv, Manually_Annotated_Images/
``300W_LP/``        {AFW,HELEN,LFPW,IBUG}[_Flip]/<name>.jpg + .mat
``AFLW2000/``       imageNNNNN.jpg + .mat
``Florence/``       subject_NN/Model/frontal1/obj/subject_NN.obj, renders/subject_NN/*.jpg + .mat
``face_model/``     mesh_topology.mat (stands in for the BFM files the 3D sets would use)
``unlabelled/``     images/NNN/NNNNNNN.jpg (the tiny preset adds deliberately corrupt files)
``manifest.json``   preset, seed, per-dataset counts and the split sizes of the miniature copies
==================  =====================================================================

Each writer module's docstring states the format facts it follows and their sources.
"""
