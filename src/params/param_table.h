// The table of named tensors that describes one contiguous buffer. Parameters, gradients
// and both AdamW moments share the same table, so checkpoints, gradient all-reduce, clipping
// and the optimizer walk one list.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dsmoe {

struct TensorInfo {
  std::string name;            // path under /params in the checkpoint, e.g. "layers/1/attn/wq"
  std::vector<int64_t> shape;  // shape held by this rank
  int64_t offset = 0;          // element offset into the buffer
  int64_t numel = 0;
  bool decay = false;          // AdamW weight decay applies (tensors of 2+ dimensions)
  // Expert tensors are stacked along dim 0 over all n_routed experts; a rank holds the
  // slice [expert_first, expert_first + shape[0]) of `global_dim0`. For every other
  // tensor expert_first = 0 and global_dim0 = shape[0].
  bool expert_sharded = false;
  int64_t expert_first = 0;
  int64_t global_dim0 = 0;
};

class ParamTable {
 public:
  // Appends a tensor; offsets are assigned in order, back to back. The reference is
  // valid until the next add().
  const TensorInfo& add(const std::string& name, std::vector<int64_t> shape,
                        bool expert_sharded = false, int64_t expert_first = 0,
                        int64_t global_dim0 = 0);
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo& get(const std::string& name) const;  // throws naming the tensor
  const TensorInfo* find(const std::string& name) const;
  int64_t size() const { return size_; }  // buffer length in elements (tensors back to back)
  // Offset where the expert-sharded tensors start; they must all come after the others.
  int64_t sharded_begin() const;

 private:
  std::vector<TensorInfo> tensors_;
  int64_t size_ = 0;
};

}  // namespace dsmoe
