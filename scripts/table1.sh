#!/usr/bin/env bash
# Paper Table 1 (§4 "Effect of unsupervised method"): Scratch vs MoCo-v2 vs SwAV (batch 4096) vs SwAV
# (batch 256), each pre-trained on VGG-Face without labels, then fine-tuned on 2 % of 300W (NME %, test
# set) and of DISFA (ICC). The paper's DISFA "2 %" numbers are Table 7's 1 % rows (.237, .560), so the
# DISFA runs use 1 % (scripts/paper_numbers.yaml).
#
#   VGGFACE=/data/lists/vggface2.txt DATA=/data DISFA=/data/DISFA NGPU=8 bash scripts/table1.sh
#   bash scripts/table1.sh --synthetic      # the same steps on the built-in synthetic set (scripts/common.sh)
#
# Steps:
#   1. pre-training on VGGFACE (image folder, list file or shard folder; pretrain/README.md) into
#      PT_RUNS/{swav,swav256,moco}_vggf: pretrain/configs/swav_r50.yaml, swav_r50_bs256.yaml, moco_r50.yaml.
#      VGGF_CKPT (Table 6's "Ours (VGG-F)") replaces the SwAV run when given. A finished pre-training
#      (backbone.pth present) is skipped, an interrupted one resumes. For the paper's 64 GPUs run
#      scripts/slurm/pretrain.sbatch with OUT=PT_RUNS/<name> first, then this script.
#   2. 300W at 2 % from scratch and from each backbone: LM_RUNS/300w_0.02_{scratch,moco_vggf,ours_vggf,
#      swav256_vggf} (the scratch / ours_vggf runs are scripts/table6.sh's, shared and skipped when done;
#      one subset for all, App. A.3).
#   3. DISFA at 1 %, 3 subject folds pooled: AU_RUNS/disfa_{scratch,vggf_moco,vggf_ours,vggf_swav256}_finetune_0.01.
#   4. python scripts/collect.py --table 1.
# Env: VGGFACE, DATA (holds 300W/), DISFA, VGGF_CKPT, PT_RUNS, LM_RUNS, AU_RUNS, NGPU / LAUNCH (fine-tuning),
# PT_NGPU / PT_LAUNCH (pre-training, default NGPU), EXTRA (overrides for every fine-tuning run), DRY_RUN=1.
# Compute: pre-training dominates. SwAV's README times 3 min 40 s per ImageNet epoch (1.28M images) at
# batch 4096 on 64 GPUs and 52 min at batch 256 on 4 GPUs (shared/research/anchors_frl_swav.md), so 200
# epochs of VGG-Face (3.3M) take about 32 h on 64 GPUs (~2,000 GPU-hours) for SwAV and ~19 days on 4 GPUs
# for SwAV (256); MoCo-v2 (two 224 px crops, batch 256) is of the same order as SwAV (256) [our estimate].
# Fine-tuning: 4 landmark runs (480 epochs of 63 images) and 12 DISFA runs, one GPU each, hours.
set -euo pipefail
source "$(dirname "$0")/common.sh"
if (( SYNTHETIC )); then
    VGGFACE=$SYN/unlabelled DATA=$SYN DISFA=$SYN/DISFA PT_RUNS=${PT_RUNS:-$SYN_RUNS/pretrain}
    LM_RUNS=${LM_RUNS:-$SYN_RUNS/landmarks} AU_RUNS=${AU_RUNS:-$SYN_RUNS/au}
    LM_EXTRA=$(tiny landmarks) AU_EXTRA=$(tiny au)
    declare -A PT_CONFIG=([swav]=synthetic [swav256]=synthetic [moco]=synthetic)
    declare -A PT_ARGS=([swav]="$(tiny pretrain)" [swav256]="$(tiny pretrain) data.batch_size=8"
                        [moco]="$(tiny pretrain) method=moco")
else
    declare -A PT_CONFIG=([swav]=swav_r50 [swav256]=swav_r50_bs256 [moco]=moco_r50)
    declare -A PT_ARGS=([swav]="" [swav256]="" [moco]="")
fi
VGGFACE=${VGGFACE:-data/lists/vggface2.txt}
DATA=${DATA:-data}
DISFA=${DISFA:-data/DISFA}
PT_RUNS=${PT_RUNS:-runs/pretrain}
LM_RUNS=${LM_RUNS:-runs/landmarks}
AU_RUNS=${AU_RUNS:-runs/au}
EXTRA=${EXTRA:-}
PT_NGPU=${PT_NGPU:-$NGPU}
if [[ -z ${PT_LAUNCH:-} ]]; then
    if (( PT_NGPU > 1 )); then PT_LAUNCH="torchrun --nproc_per_node=$PT_NGPU -m"; else PT_LAUNCH="$PY -m"; fi
fi

pretrain() {  # name: PT_RUNS/<name>_vggf/backbone.pth
    local out=$PT_RUNS/${1}_vggf
    [[ -f $out/backbone.pth ]] && return
    run $PT_LAUNCH pretrain.train --config pretrain/configs/${PT_CONFIG[$1]}.yaml data.root="$VGGFACE" out="$out" \
        ${PT_ARGS[$1]}
}
pretrain moco
pretrain swav256
if [[ -z ${VGGF_CKPT:-} ]]; then pretrain swav; VGGF_CKPT=$PT_RUNS/swav_vggf/backbone.pth; fi
declare -A INIT=([scratch]=scratch [moco]=$PT_RUNS/moco_vggf/backbone.pth [swav]=$VGGF_CKPT
                 [swav256]=$PT_RUNS/swav256_vggf/backbone.pth)
declare -A LM_NAME=([scratch]=scratch [moco]=moco_vggf [swav]=ours_vggf [swav256]=swav256_vggf)
declare -A AU_NAME=([scratch]=scratch [moco]=vggf_moco [swav]=vggf_ours [swav256]=vggf_swav256)

for method in scratch moco swav swav256; do
    [[ $method == scratch ]] || need "${INIT[$method]}" "$method backbone" VGGF_CKPT
    out=$LM_RUNS/300w_0.02_${LM_NAME[$method]}
    if [[ ! -f $out/metrics.json ]]; then       # Table 6's schedule at 2 % (480 epochs) and its shared subset
        first=$(ls $LM_RUNS/300w_0.02_*/subset_keys.txt 2>/dev/null | head -n 1 || true)
        cell landmarks landmarks/configs/300w.yaml 300w $out 480 data.root=$DATA/300W \
            model.init=${INIT[$method]} data.fraction=0.02 ${first:+data.subset_file=$first} ${LM_EXTRA:-} $EXTRA
    fi
    dir=$AU_RUNS/disfa_${AU_NAME[$method]}_finetune_0.01
    for fold in 0 1 2; do                        # Table 7's schedule at 1 % (320 epochs)
        cell au_intensity au_intensity/configs/disfa.yaml disfa $dir/f$fold 320 \
            data.root=$DISFA data.fold=$fold data.fraction=0.01 model.init=${INIT[$method]} ${AU_EXTRA:-} $EXTRA
    done
    run $PY -m au_intensity.eval --config au_intensity/configs/disfa.yaml --out $dir --pool $dir/f0 $dir/f1 $dir/f2
done
run $PY scripts/collect.py --table 1 "$LM_RUNS" "$AU_RUNS" --out "$LM_RUNS/table1.md"
search_summary "$LM_RUNS"
