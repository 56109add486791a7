// The small parameter table of the checkpoint tests and of the checkpoint fuzzer's seed corpus
// (tests/fuzz/make_checkpoint_seeds.cpp writes the seeds with it; the fuzzer reads against it).
#pragma once
#include "params/param_table.h"

namespace dsmoe {

inline ParamTable small_checkpoint_table() {
  ParamTable t;
  t.add("tok_embedding", {10, 4});
  t.add("final_norm", {4});
  t.add("layers/1/attn_norm", {4});
  t.add("layers/1/moe/experts/w_gate", {4, 3, 2}, true, 0, 4);
  return t;
}

}  // namespace dsmoe
