// The token dispatcher: permutes (token, expert) pairs into rows grouped by expert, sends
// them to the rank that holds the expert, and brings results back in pair order. No math.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.h"

namespace dsmoe {

template <typename T>
class Dispatcher {
 public:
  virtual ~Dispatcher() = default;
  // sel, kept: [tokens, K] routing decisions of this rank's tokens.
  virtual void plan(const std::vector<int32_t>& sel, const std::vector<uint8_t>& kept, int tokens, int k) = 0;
  // Rows this rank computes, per local expert, in order.
  virtual const std::vector<int>& expert_rows() const = 0;
  virtual int rows() const = 0;
  // x [tokens, d] -> xe [rows, d]
  virtual void dispatch(T* xe, const T* x, int d) = 0;
  // ye [rows, d] -> y_pairs [tokens*K, d], zero rows for dropped pairs
  virtual void combine(T* y_pairs, const T* ye, int d) = 0;
  // Backward of combine: dy_pairs [tokens*K, d] -> dye [rows, d]
  virtual void combine_backward(T* dye, const T* dy_pairs, int d) = 0;
  // Backward of dispatch: dx [tokens, d] += sum over each token's pairs of dxe rows.
  virtual void dispatch_backward(T* dx, const T* dxe, int d) = 0;
};

// All experts on this rank: the permutation alone.
template <typename T>
std::unique_ptr<Dispatcher<T>> make_local_dispatcher(Backend<T>& be, int n_experts, int max_tokens, int k,
                                                     int d);

}  // namespace dsmoe
