#!/usr/bin/env bash
# `make demo`: the whole pipeline on the built-in synthetic face benchmark (CPU, minutes).
set -euo pipefail
echo "demo arrives with the synthetic benchmark (issue 3) and the task pipelines; run 'make test' meanwhile."
