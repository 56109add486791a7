// SwiGLU experts as grouped matrix products over consecutive blocks of rows: block b takes the
// next `rows` rows of x through expert `expert`'s gate and up weights, which lie side by side
// ([2 hidden, d]: gate rows, then up rows; ParamTable::add_pair), and w_down [d, hidden]. So one
// product of width 2 hidden computes both forward, and one of depth 2 hidden gives dx. An expert
// may own several blocks (rows from several ranks). A dense SwiGLU FFN (dense layers, the fused
// shared experts) is one block of expert 0 (its w_gate and w_up tensors follow each other).
#pragma once
#include <vector>

#include "backend/backend.h"

namespace dsmoe {

struct RowBlock {
  int expert = 0;
  int rows = 0;
};

template <typename T>
struct SwiGluWeights {
  const T* w_gate_up;  // [groups, 2 hidden, d]
  const T* w_down;     // [groups, d, hidden]
  T* g_gate_up;        // gradients, same shapes
  T* g_down;
  int d = 0, hidden = 0;
  // 0: the backward overwrites the gradients (the first of a step: no zero fill beforehand;
  // experts without rows get zeros), 1: it adds to them.
  T g_beta = 1;
  int groups = 1;   // experts (dim 0 of the weights), for the zeros of those without rows
};

// x [rows, d] -> gu [rows, 2*hidden] (gate | up): the products of the forward's first step, alone
// for a backward that recomputes gu (train.recompute: moe) with the forward's kernels.
template <typename T>
void swiglu_experts_gate_up(Backend<T>& be, const SwiGluWeights<T>& w, const std::vector<RowBlock>& blocks,
                            Ptr<const T> x, Ptr<T> gu);

// x [rows, d] -> gu [rows, 2*hidden] (gate | up), act [rows, hidden], y [rows, d]. scale [rows]
// (null: 1) multiplies each row's activation before the down product: the routed experts'
// gates, applied on the experts' side, so that a row's result is already gate-weighted. With a
// residual [rows, d] (in T, as y then), y = residual + the FFN's output, added by the down product.
template <typename T>
void swiglu_experts_forward(Backend<T>& be, const SwiGluWeights<T>& w, const std::vector<RowBlock>& blocks,
                            Ptr<const T> x, const T* scale, Ptr<T> gu, Ptr<T> act, Ptr<T> y,
                            const T* residual = nullptr);

// dy [rows, d] -> dx [rows, d] (written, or added to with dx_beta = 1; it may be dy itself: the
// products that read dy come first); weight gradients by g_beta; with a scale, dscale [rows] is
// written. act is the forward's (scaled). dgu, dact: scratch.
template <typename T>
void swiglu_experts_backward(Backend<T>& be, const SwiGluWeights<T>& w, const std::vector<RowBlock>& blocks,
                             Ptr<const T> x, const T* scale, Ptr<const T> gu, Ptr<const T> act, Ptr<const T> dy,
                             T* dscale, Ptr<T> dgu, Ptr<T> dact, Ptr<T> dx, T dx_beta = 0);

}  // namespace dsmoe
