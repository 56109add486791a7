// The table of named tensors that describes one contiguous buffer. Parameters, gradients
// and both AdamW moments share the same table, so checkpoints, gradient all-reduce, clipping
// and the optimizer walk one list.
#pragma once
#include <algorithm>
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
  // Elements between consecutive slices along dim 0 in the buffer: slice() where the tensor lies
  // contiguous; twice that for a pair added interleaved (ParamTable::add_pair).
  int64_t stride0 = 0;

  int64_t slice() const { return numel / shape.at(0); }  // elements of one slice along dim 0
  bool contiguous() const { return stride0 == slice(); }   // not one of an interleaved pair
  // Where element i (row-major, of this rank's part) lies in the buffer.
  int64_t at(int64_t i) const { return offset + i / slice() * stride0 + i % slice(); }
  // One past the last buffer element the tensor covers.
  int64_t end() const { return offset + (shape.at(0) - 1) * stride0 + slice(); }
};

// The tensor's elements in row-major order, out of the buffer (into out[0, numel)), and back
// into it.
template <typename T>
void copy_tensor_elements(const TensorInfo& t, const T* buf, T* out) {
  const int64_t row = t.slice();
  for (int64_t s = 0; s < t.shape.at(0); ++s)
    std::copy(buf + t.offset + s * t.stride0, buf + t.offset + s * t.stride0 + row, out + s * row);
}
template <typename T>
std::vector<T> tensor_elements(const TensorInfo& t, const T* buf) {
  std::vector<T> out(static_cast<size_t>(t.numel));
  copy_tensor_elements(t, buf, out.data());
  return out;
}
template <typename T>
void set_tensor_elements(const TensorInfo& t, const T* src, T* buf) {
  const int64_t row = t.slice();
  for (int64_t s = 0; s < t.shape.at(0); ++s)
    std::copy(src + s * row, src + (s + 1) * row, buf + t.offset + s * t.stride0);
}

class ParamTable {
 public:
  // Appends a tensor; offsets are assigned in order, back to back. The reference is
  // valid until the next add().
  const TensorInfo& add(const std::string& name, std::vector<int64_t> shape,
                        bool expert_sharded = false, int64_t expert_first = 0,
                        int64_t global_dim0 = 0);
  // Two tensors of one shape interleaved along dim 0: slice s of `first`, then slice s of
  // `second`, for every s (the routed experts' w_gate and w_up: an expert's gate rows and up
  // rows side by side, one matrix of 2 hidden rows, so that one product computes both).
  void add_pair(const std::string& first, const std::string& second, const std::vector<int64_t>& shape,
                bool expert_sharded = false, int64_t expert_first = 0, int64_t global_dim0 = 0);
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo& get(const std::string& name) const;  // throws naming the tensor
  const TensorInfo* find(const std::string& name) const;
  int64_t size() const { return size_; }  // buffer length in elements (tensors back to back)
  // Offset where the expert-sharded tensors start; they must all come after the others.
  // Tensors lie in the order added; a pair's two cover one contiguous range together.
  int64_t sharded_begin() const;

 private:
  std::vector<TensorInfo> tensors_;
  int64_t size_ = 0;
};

}  // namespace dsmoe
