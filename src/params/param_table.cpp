#include "params/param_table.h"

#include <algorithm>

#include "util/check.h"

namespace dsmoe {

const TensorInfo& ParamTable::add(const std::string& name, std::vector<int64_t> shape,
                                  bool expert_sharded, int64_t expert_first, int64_t global_dim0) {
  DSMOE_CHECK(find(name) == nullptr, "duplicate tensor ", name);
  TensorInfo t;
  t.name = name;
  t.numel = 1;
  for (int64_t s : shape) t.numel *= s;
  t.shape = std::move(shape);
  t.offset = size_;
  t.decay = t.shape.size() >= 2;
  t.expert_sharded = expert_sharded;
  t.expert_first = expert_first;
  t.global_dim0 = expert_sharded ? global_dim0 : t.shape.at(0);
  t.stride0 = t.slice();
  size_ += t.numel;  // no padding: tensors added in a row form one matrix (wq,wk,wv)
  tensors_.push_back(std::move(t));
  return tensors_.back();
}

void ParamTable::add_pair(const std::string& first, const std::string& second, const std::vector<int64_t>& shape,
                          bool expert_sharded, int64_t expert_first, int64_t global_dim0) {
  const int64_t begin = size_;
  add(first, shape, expert_sharded, expert_first, global_dim0);
  add(second, shape, expert_sharded, expert_first, global_dim0);
  TensorInfo &a = tensors_[tensors_.size() - 2], &b = tensors_.back();
  a.stride0 = b.stride0 = 2 * a.slice();
  a.offset = begin;
  b.offset = begin + a.slice();
}

const TensorInfo* ParamTable::find(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

const TensorInfo& ParamTable::get(const std::string& name) const {
  const TensorInfo* t = find(name);
  DSMOE_CHECK(t != nullptr, "no tensor named ", name);
  return *t;
}

int64_t ParamTable::sharded_begin() const {
  int64_t begin = size_;
  for (const auto& t : tensors_) {
    if (t.expert_sharded)
      begin = std::min(begin, t.offset);
    else
      DSMOE_ASSERT(t.end() <= begin);
  }
  return begin;
}

}  // namespace dsmoe
