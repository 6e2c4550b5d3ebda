#!/usr/bin/env bash
# The published runs of docs/strategies.md and docs/adaptive.md. Each stage resumes: rerun it and it samples only
# what is missing, so a run interrupted midway (or committed in part) goes on from its shards, on any machine.
#   bash docs/results/reproduce.sh temperature   # GSM8K train, 50 problems x 16 at each T, plus greedy
#   bash docs/results/reproduce.sh headline      # GSM8K test, first 100 problems x 16 at the chosen T, plus greedy
#   bash docs/results/reproduce.sh strategies    # first 50 test problems x 8: every prompt style, plus greedy each
#   bash docs/results/reproduce.sh cot_decoding  # first 50 test problems: plain prompt, top-10 branches
#   bash docs/results/reproduce.sh online        # the headline's first 20 problems, stopped online by one rule
#                                                  (ONLINE_RULE=eb: by eb)
# Run from the project root with the venv active. Then `python -m benchmarks.published` prints the tables.
set -euo pipefail
export MARGINAL_DATA_DIR=../shared/data  # relative: the saved configs match on any machine with this layout
out=docs/results
temperatures=(0.3 0.5 0.7 1.0)
# Chosen on GSM8K train (the temperature stage's table): the T with the largest paired maj@16 - greedy
# (0.5: +21.2 points; 1.0: +21.1, 0.7: +14.5, 0.3: +11.0).
chosen_t="${CHOSEN_T:-0.5}"
online_rule="${ONLINE_RULE:-confident}"  # the adaptive replay on the headline saved most with it (docs/adaptive.md)
max_tokens=512  # under 5% of the temperature stage's samples reach it (its table's capped column)
# Small units, all in flight: a shard lands every 16 samples and the engine's batch stays full to the end (with the
# defaults, 64 x 8, a unit is written only when its longest sample ends and queued units wait for it).
fill=(cluster.unit_size=16 cluster.max_inflight=64)

temperature() {
  # One greedy run serves every temperature: the others' greedy/ is a link to it.
  local base="$out/gsm8k_train-cot-50x16"
  for t in "${temperatures[@]}"; do
    if [ "$t" != "${temperatures[0]}" ] && [ ! -e "$base/t$t/greedy" ]; then
      mkdir -p "$base/t$t" && ln -s "../t${temperatures[0]}/greedy" "$base/t$t/greedy"
    fi
    python -m jobs.evaluate dataset=gsm8k_train dataset.limit=50 sampling.n=16 sampling.temperature="$t" \
      sampling.logprobs=0 "${fill[@]}" run_dir="$base/t$t"
  done
}

need_t() { [ -n "$chosen_t" ] || { echo "no temperature chosen yet: run the temperature stage, then set chosen_t" >&2; exit 2; }; }

headline() {
  need_t
  for limit in 25 50 75 100; do  # grows by 25 problems: each step ends with whole problems on disk
    python -m jobs.evaluate dataset=gsm8k dataset.limit=$limit sampling.n=16 sampling.temperature="$chosen_t" \
      sampling.max_tokens=$max_tokens sampling.logprobs=5 "${fill[@]}" run_dir="$out/gsm8k-cot-100x16"
  done
}

strategies() {
  need_t
  for style in cot direct few_shot_cot analogical step_back; do
    python -m jobs.evaluate dataset=gsm8k dataset.limit=50 sampling.n=8 sampling.temperature="$chosen_t" \
      sampling.max_tokens=$max_tokens sampling.logprobs=1 prompt=$style "${fill[@]}" run_dir="$out/gsm8k-$style-50x8"
  done
}

cot_decoding() {
  python -m jobs.evaluate dataset=gsm8k dataset.limit=50 decoding=cot_decoding prompt=plain sampling.top_k_branches=10 \
    sampling.max_tokens=$max_tokens sampling.logprobs=2 "${fill[@]}" run_dir="$out/gsm8k-plain-cot_decoding-50x10"
}

online() {
  need_t
  [ -n "$online_rule" ] || { echo "no rule chosen yet: replay the headline (docs/adaptive.md), then set online_rule" >&2; exit 2; }
  # rounds of 4: the first 4 samples of every problem at once, then 4 more per problem its rule lets go on
  # a rule that learns a prior (eb) fits it on the GSM8K train run at the same T: held apart from these problems
  local prior=()
  [ "$online_rule" != eb ] || prior=(adaptive.prior_run="$out/gsm8k_train-cot-50x16/t$chosen_t")
  python -m jobs.sample adaptive="$online_rule" adaptive.min_samples=4 adaptive.batch=4 dataset=gsm8k dataset.limit=20 sampling.n=16 \
    "${prior[@]}" \
    sampling.temperature="$chosen_t" sampling.max_tokens=$max_tokens sampling.logprobs=5 "${fill[@]}" \
    run_dir="$out/gsm8k-cot-20x16-adaptive-$online_rule"
}

"${1:?which stage: temperature, headline, strategies, cot_decoding or online}"
