#!/usr/bin/env bash
# The published runs of docs/strategies.md, each resumable: rerun a stage and it samples only what is missing.
#   bash docs/results/reproduce.sh temperature   # GSM8K train, 50 problems x 16 at each T, plus greedy
# Run from the project root with the venv active; data from ../shared/data unless MARGINAL_DATA_DIR is set.
set -euo pipefail
export MARGINAL_DATA_DIR=../shared/data  # relative: the saved configs match on any machine with this layout
out=docs/results
temperatures=(0.3 0.5 0.7 1.0)

temperature() {
  # One greedy run serves every temperature: the others' greedy/ is a link to it.
  local base="$out/gsm8k_train-cot-50x16"
  for t in "${temperatures[@]}"; do
    if [ "$t" != "${temperatures[0]}" ] && [ ! -e "$base/t$t/greedy" ]; then
      mkdir -p "$base/t$t" && ln -s "../t${temperatures[0]}/greedy" "$base/t$t/greedy"
    fi
    python -m jobs.evaluate dataset=gsm8k_train dataset.limit=50 sampling.n=16 sampling.temperature="$t" \
      sampling.logprobs=0 run_dir="$base/t$t"
  done
}

"${1:?which stage: temperature}"
