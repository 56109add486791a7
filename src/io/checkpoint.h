// Checkpoints in the HDF5 layout of docs/model.md, Checkpoint: one file for the whole
// model, float32, [out, in] layout, experts stacked. Written to "<path>.tmp" and renamed, so a
// crash never leaves a half-written checkpoint under the real name.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "params/param_table.h"

namespace dsmoe {

struct CheckpointMeta {
  int64_t step = 0;          // optimizer steps taken
  int64_t tokens_seen = 0;
  std::string config_yaml;   // the resolved config
  double loss = 0, aux_loss = 0, lr = 0, grad_norm = 0;  // of the last step taken (optional: 0)
};

// What a checkpoint holds for the tensors of `table` (this rank's slices).
struct CheckpointState {
  std::vector<float> params;  // table.size() elements each
  std::vector<float> m, v;    // AdamW moments
  int64_t optimizer_step = 0;
  std::vector<std::vector<float>> bias;  // per MoE layer, [n_routed] (global, not sharded)
  std::vector<int> moe_layers;           // layer index of each bias entry
  CheckpointMeta meta;
};

// Writes the whole model (single writer: the caller holds every tensor of `table`).
void write_checkpoint(const std::string& path, const ParamTable& table, const CheckpointState& state);

// Reads the tensors of `table` (an expert-sharded tensor reads rows
// [expert_first, expert_first + shape[0]) of its stacked dataset). Checks the format attribute
// and version, and every dataset's shape against the table, throwing an Error that names the
// file and the tensor (missing, wrong shape) on mismatch. A checkpoint without /optimizer
// loads with zero moments and optimizer_step = meta.step.
//
// Any HDF5 file (superblock 0 and 1, as h5py writes by default, included) is probed in a child
// process first (this program started again: util/isolated.h), which parses all that the read
// parses: a damaged file that crashes or hangs HDF5 there is refused with an Error naming it
// ("damaged checkpoint: reading it crashed (Segmentation fault)"), and this process goes on.
// So does read_checkpoint_meta.
CheckpointState read_checkpoint(const std::string& path, const ParamTable& table,
                                const std::vector<int>& moe_layers, int n_routed);

// train.keep_checkpoints = keep > 0: keeps the checkpoint just written at `path` (".../checkpoint.h5")
// also as ".../checkpoint-<step>.h5" (a hard link to it, else a copy; made under a temporary
// name and renamed, so it is always whole), then removes all but the newest `keep` of the
// checkpoint-<step>.h5 beside it. Errors name the file.
void keep_checkpoint(const std::string& path, int64_t step, int keep);

// Only the metadata (for `dsmoe eval/generate`, which rebuild the model from the stored config).
CheckpointMeta read_checkpoint_meta(const std::string& path);

}  // namespace dsmoe
