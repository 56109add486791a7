// Peak memory of one rank, as the engine allocates it (docs/simulation.md "Memory"): every
// buffer of src/model, src/moe and src/train is counted from its size formula. The backends
// allocate everything at construction and only grow the expert-row and dispatcher buffers to the
// largest routing seen, so the peak is the sum at the end of a step.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"

namespace dsmoe::sim {

struct MemoryBreakdown {
  double weights = 0, grads = 0, optimizer = 0;  // fp32 parameters, gradients, AdamW m and v (this rank's part)
  double activations = 0;  // saved for backward: per layer, the MoE layers' expert rows, the head
  double scratch = 0;      // backward buffers (shared by all layers) and the attention scratch
  double dispatch = 0;     // dispatcher: send and receive token-copy buffers and its index arrays
  // CUDA with precision bf16: the bf16 copy of the parameters, the bf16 staging of the largest
  // fp32 inputs of one product, cuBLASLt's workspace (kernels/bf16_gemm.cuh) and the attention
  // backward's bf16 copies (kernels/flash_attention.cu). The activations stored in bf16 count in
  // activations and scratch at 2 bytes.
  double bf16 = 0;
  double total() const { return weights + grads + optimizer + activations + scratch + dispatch + bf16; }
};

// What the routing puts on one rank, per MoE layer, for one micro-batch.
struct RankRows {
  std::vector<double> rows;       // expert rows computed here (own tokens' pairs included)
  std::vector<double> own_rows;   // pairs of this rank's tokens whose expert is here
  std::vector<double> units_out;  // units sent in dispatch
  std::vector<double> units_in;   // units received
};

// cfg: the resolved config; ep: expert-parallel size; replicas: copies of each expert shard (the
// world is ep x replicas ranks; the rank is ep_rank of the first copy); seqs: sequences of one
// micro-batch on the rank; backend "cpu" (attention keeps the [B, H, T, T] probabilities) or
// "cuda" (one log-sum-exp per query). rows: empty means one rank (every pair computed here).
MemoryBreakdown rank_memory(const Config& cfg, int ep, int ep_rank, int replicas, int seqs, const std::string& backend,
                            const RankRows& rows);

}  // namespace dsmoe::sim
