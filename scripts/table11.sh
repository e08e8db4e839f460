#!/usr/bin/env bash
# Paper Table 11 (App. D; captioned "BU4D"): per-AU ICC on BP4D. The paper prints Table 8's numbers
# again, so this runs scripts/table8.sh (same runs, skipped when done) and prints Table 11.
#
#   BP4D=/data/BP4D VGGF_CKPT=runs/swav_vggface2/backbone.pth bash scripts/table11.sh
#   bash scripts/table11.sh --synthetic     # the same steps on the built-in synthetic set (scripts/common.sh)
# Compute: that of scripts/table8.sh (nothing more once it has run).
set -euo pipefail
cd "$(dirname "$0")/.."
TABLE=11 bash scripts/table8.sh "$@"
