#!/usr/bin/env bash
# Paper Table 2 (§4 "How much facial data is required?", "Curated vs. uncurated"): SwAV pre-trained on
# VGG-Face-small (1M), VGG-Face (3.3M), Large-Scale-Face (>5M) and Flickr-Face (1.8M, uncurated), then
# fine-tuned at 100 / 10 / 2 % on 300W (NME %, test set), DISFA (ICC) and VGGFace2 -> IJB-B (TAR at
# FAR 1e-4). The paper's DISFA "2 %" numbers are Table 7's 1 % rows, so DISFA runs 1.0 / 0.1 / 0.01.
#
#   VGGFACE_SMALL=/data/lists/vggface2_1m.txt VGGFACE=/data/lists/vggface2.txt LSF=/data/lists/large_scale_face.txt \
#   FLICKR=/data/lists/flickr_face.txt DATA=/data DISFA=/data/DISFA NGPU=1 FR_NGPU=8 bash scripts/table2.sh
#   bash scripts/table2.sh --synthetic      # the same steps on the built-in synthetic set (scripts/common.sh)
#
# The lists come from pretrain/curate (README: vggface2-1m, vggface2, large-scale-face, flickr-face).
# Steps:
#   1. SwAV (pretrain/configs/swav_r50.yaml) on each set into PT_RUNS/swav_{vggfsmall,vggf,lsf,flickr};
#      VGGF_CKPT / FLICKR_CKPT (Tables 4, 6, 7's "Ours") replace those runs when given. Finished
#      pre-training (backbone.pth present) is skipped; scripts/slurm/pretrain.sbatch runs it on 64 GPUs.
#   2. 300W: LM_RUNS/300w_<fraction>_ours_{vggfsmall,vggf,lsf,flickrf} (Table 6's schedules and subsets).
#   3. DISFA, 3 folds pooled: AU_RUNS/disfa_{vggfsmall,vggf,lsf,flickr}_ours_finetune_<fraction> (Table 7's).
#   4. CosFace on VGGFace2 + IJB-B: FR_RUNS/fr_{vggfsmall,vggf,lsf,flickr}_<regime> (Table 4's schedules,
#      its subset of the regime when present).
#   5. python scripts/collect.py --table 2.
# Env: the data sets above, DATA (holds 300W/, VGGFace2/, IJBB/, IJBC/), DISFA, VGGF_CKPT, FLICKR_CKPT,
# PT_RUNS, LM_RUNS, AU_RUNS, FR_RUNS, NGPU / LAUNCH (landmarks, DISFA), FR_NGPU (default 8), PT_NGPU /
# PT_LAUNCH (pre-training), LM_EXTRA / AU_EXTRA / FR_EXTRA (overrides for one task's runs), EXTRA (for every
# fine-tuning run), DRY_RUN=1. The face-recognition runs evaluate IJB-B and IJB-C, as Table 4's (shared) do.
# Compute: four SwAV pre-trainings, 200 epochs at batch 4096: from SwAV's 3 min 40 s per 1.28M images on
# 64 GPUs (shared/research/anchors_frl_swav.md), about 600 (VGG-Face-small), 2,000 (VGG-Face), 3,100
# (Large-Scale-Face) and 1,100 (Flickr-Face) GPU-hours [our scaling]; then 12 landmark runs, 36 DISFA runs
# (one GPU each) and 12 CosFace runs on 8 GPUs (a VGGFace2 epoch of 3.1M images at batch 512).
set -euo pipefail
source "$(dirname "$0")/common.sh"
if (( SYNTHETIC )); then
    VGGFACE_SMALL=$SYN/unlabelled VGGFACE=$SYN/unlabelled LSF=$SYN/unlabelled FLICKR=$SYN/unlabelled
    DATA=$SYN DISFA=$SYN/DISFA PT_RUNS=${PT_RUNS:-$SYN_RUNS/pretrain} LM_RUNS=${LM_RUNS:-$SYN_RUNS/landmarks}
    AU_RUNS=${AU_RUNS:-$SYN_RUNS/au} FR_RUNS=${FR_RUNS:-$SYN_RUNS/table4} FR_NGPU=0
    PT_CONFIG=pretrain/configs/synthetic.yaml PT_ARGS=$(tiny pretrain)
    LM_EXTRA=$(tiny landmarks) AU_EXTRA=$(tiny au) FR_EXTRA=$(tiny fr)
fi
DATA=${DATA:-data}
DISFA=${DISFA:-data/DISFA}
PT_RUNS=${PT_RUNS:-runs/pretrain}
LM_RUNS=${LM_RUNS:-runs/landmarks}
AU_RUNS=${AU_RUNS:-runs/au}
FR_RUNS=${FR_RUNS:-runs/table4}
PT_CONFIG=${PT_CONFIG:-pretrain/configs/swav_r50.yaml}
PT_ARGS=${PT_ARGS:-}
EXTRA=${EXTRA:-}
FRACTIONS=${FRACTIONS:-"1.0 0.1 0.02"}
PT_NGPU=${PT_NGPU:-$NGPU}
FR_NGPU=${FR_NGPU:-8}
launcher() { if (( $1 > 1 )); then echo "torchrun --nproc_per_node=$1 -m"; else echo "$PY -m"; fi; }
PT_LAUNCH=${PT_LAUNCH:-$(launcher "$PT_NGPU")}
FR_LAUNCH=${FR_LAUNCH:-$(launcher "$FR_NGPU")}
declare -A SOURCE=([vggfsmall]=${VGGFACE_SMALL:-data/lists/vggface2_1m.txt} [vggf]=${VGGFACE:-data/lists/vggface2.txt}
                   [lsf]=${LSF:-data/lists/large_scale_face.txt} [flickr]=${FLICKR:-data/lists/flickr_face.txt})
declare -A GIVEN=([vggf]=${VGGF_CKPT:-} [flickr]=${FLICKR_CKPT:-})
declare -A LM_NAME=([vggfsmall]=ours_vggfsmall [vggf]=ours_vggf [lsf]=ours_lsf [flickr]=ours_flickrf)
declare -A AU_FRACTION=([1.0]=1.0 [0.1]=0.1 [0.02]=0.01)
declare -A FR_REGIME=([1.0]=100 [0.1]=10 [0.02]=2)
declare -A LM_EPOCHS=([1.0]=60 [0.1]=240 [0.02]=480)     # scripts/table6.sh
declare -A AU_EPOCHS=([1.0]=60 [0.1]=160 [0.02]=320)     # scripts/table7.sh
declare -A FR_EPOCHS=([1.0]=18 [0.1]=36 [0.02]=54)       # scripts/table4.sh
declare -A INIT
for data in vggfsmall vggf lsf flickr; do
    out=$PT_RUNS/swav_$data
    INIT[$data]=${GIVEN[$data]:-$out/backbone.pth}
    [[ -n ${GIVEN[$data]:-} || -f $out/backbone.pth ]] || run $PT_LAUNCH pretrain.train --config $PT_CONFIG \
        data.root="${SOURCE[$data]}" out="$out" $PT_ARGS
done

for frac in $FRACTIONS; do
    for data in vggfsmall vggf lsf flickr; do
        init=${INIT[$data]}
        need "$init" "SwAV backbone of $data" "PT_RUNS (or VGGF_CKPT / FLICKR_CKPT)"
        out=$LM_RUNS/300w_${frac}_${LM_NAME[$data]}
        if [[ ! -f $out/metrics.json ]]; then
            first=$(ls $LM_RUNS/300w_${frac}_*/subset_keys.txt 2>/dev/null | head -n 1 || true)
            cell landmarks landmarks/configs/300w.yaml 300w $out ${LM_EPOCHS[$frac]} data.root=$DATA/300W \
                model.init=$init data.fraction=$frac ${first:+data.subset_file=$first} ${LM_EXTRA:-} $EXTRA
        fi
        dir=$AU_RUNS/disfa_${data}_ours_finetune_${AU_FRACTION[$frac]}
        for fold in 0 1 2; do
            cell au_intensity au_intensity/configs/disfa.yaml disfa $dir/f$fold ${AU_EPOCHS[$frac]} \
                data.root=$DISFA data.fold=$fold data.fraction=${AU_FRACTION[$frac]} model.init=$init \
                ${AU_EXTRA:-} $EXTRA
        done
        run $PY -m au_intensity.eval --config au_intensity/configs/disfa.yaml --out $dir --pool $dir/f0 $dir/f1 $dir/f2
        out=$FR_RUNS/fr_${data}_${FR_REGIME[$frac]}
        if [[ ! -f $out/metrics.json ]]; then
            subset=$(ls $FR_RUNS/fr_*_${FR_REGIME[$frac]}/subset.txt 2>/dev/null | head -n 1 || true)
            [[ $frac == 1.0 ]] && subset=""
            LAUNCH=$FR_LAUNCH cell face_recognition face_recognition/configs/vggface2.yaml vggface2 $out \
                ${FR_EPOCHS[$frac]} data.root=$DATA model.init=$init data.fraction=$frac \
                ${subset:+data.subset_file=$subset} ${FR_EXTRA:-} $EXTRA
        fi
    done
done
run $PY scripts/collect.py --table 2 "$LM_RUNS" "$AU_RUNS" "$FR_RUNS" --out "$LM_RUNS/table2.md"
search_summary "$LM_RUNS"
