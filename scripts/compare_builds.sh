#!/usr/bin/env bash
# Checks that two builds of dsmoe train bit-identically: each routing variant (every score
# function, norm_topk, router noise, capacity dropping, bias balancing, device-limited routing)
# of a tiny model for 6 steps on 1 and 4 ranks, with both executables into the same folder
# name; the checkpoints must be identical (h5diff) and so must the metrics' losses, norms,
# evaluations and expert loads. For refactors that must not change results.
#
#   bash scripts/compare_builds.sh OLD_DSMOE NEW_DSMOE
# (build the old one from a worktree: git worktree add /tmp/old REV && cmake -S /tmp/old -B
# /tmp/old/build -DDSMOE_TESTS=OFF && cmake --build /tmp/old/build --target dsmoe)
set -euo pipefail
old=$(realpath "$1") new=$(realpath "$2")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1 \
  OMPI_MCA_btl=self,vader OMPI_MCA_rmaps_base_oversubscribe=1
cat > "$work/base.yaml" <<YAML
name: compare
seed: 7
backend: cpu
model: {vocab_size: 256, d_model: 32, n_layers: 3, n_heads: 2, seq_len: 32, first_dense_layers: 1, dense_hidden: 64}
moe: {n_routed: 8, n_shared: 1, top_k: 2, expert_hidden: 16}
balance: {expert_alpha: 0.01, device_alpha: 0.02, seq_alpha: 0.001}
train: {steps: 6, batch_size: 8, log_every: 1, eval_every: 3, eval_batches: 2, warmup_steps: 2}
data: {path: default, val_fraction: 0.01}
YAML
variants=("moe.score=softmax" "moe.score=softmax_topk" "moe.score=sigmoid moe.norm_topk=true"
          "moe.router_noise=0.5" "moe.capacity_factor=1.0 moe.top_k=1" "balance.bias_rate=0.01"
          "moe.route_devices=2 balance.device_groups=4")
status=0
for ranks in 1 4; do
  for v in "${variants[@]}"; do
    sets=(--set "out=$work/out" --set "parallel.expert_parallel=$ranks")
    for kv in $v; do sets+=(--set "$kv"); done
    for which in old new; do
      exe=$old; [ $which = new ] && exe=$new
      rm -rf "$work/out"
      mpiexec -n "$ranks" "$exe" train "$work/base.yaml" "${sets[@]}" > "$work/$which.log" 2>&1 \
        || { echo "$which failed on $ranks rank(s) [$v]:"; tail -3 "$work/$which.log"; exit 1; }
      rm -rf "$work/$which" && mv "$work/out" "$work/$which"
    done
    differ=()
    h5diff -q "$work/old/checkpoint.h5" "$work/new/checkpoint.h5" > /dev/null 2>&1 || differ+=(checkpoint)
    for d in train/loss train/aux_loss train/grad_norm eval/loss experts/load experts/dropped; do
      h5diff -q "$work/old/metrics.h5" "$work/new/metrics.h5" "$d" "$d" > /dev/null 2>&1 || differ+=("$d")
    done
    if [ ${#differ[@]} -eq 0 ]; then
      echo "identical: $ranks rank(s) [$v]"
    else
      echo "DIFFERENT: $ranks rank(s) [$v]: ${differ[*]}"
      status=1
    fi
  done
done
exit $status
