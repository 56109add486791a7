// SwiGLU experts as grouped matrix products: group e takes rows [offset_e, offset_e + rows_e)
// of x (tokens sorted by expert) through its own w_gate, w_up [hidden, d] and w_down [d, hidden].
// A dense SwiGLU FFN (dense layers, the fused shared experts) is the one-group case.
#pragma once
#include <vector>

#include "backend/backend.h"

namespace dsmoe {

template <typename T>
struct SwiGluWeights {
  const T* w_gate;  // [groups, hidden, d]
  const T* w_up;    // [groups, hidden, d]
  const T* w_down;  // [groups, d, hidden]
  T* g_gate;        // gradients, same shapes (accumulated)
  T* g_up;
  T* g_down;
  int d = 0, hidden = 0;
};

// x [rows, d] -> gu [rows, 2*hidden] (gate | up), act [rows, hidden], y [rows, d].
template <typename T>
void swiglu_experts_forward(Backend<T>& be, const SwiGluWeights<T>& w, const std::vector<int>& group_rows,
                            const T* x, T* gu, T* act, T* y);

// dy [rows, d] -> dx [rows, d] (written); weight gradients accumulated. dgu, dact: scratch.
template <typename T>
void swiglu_experts_backward(Backend<T>& be, const SwiGluWeights<T>& w, const std::vector<int>& group_rows,
                             const T* x, const T* gu, const T* act, const T* dy, T* dgu, T* dact, T* dx);

}  // namespace dsmoe
