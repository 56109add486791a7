// The three products of a linear layer out = inp . weight^T, by role: weight [n_out, n_in] as the
// parameter table stores it (row-major, one row per output), inp [rows, n_in], out [rows, n_out],
// every row contiguous. They build the GemmArgs that Backend::gemm runs.
#pragma once
#include "backend/backend.h"

namespace dsmoe {

// Full fp32 products even under bf16 precision (the router's), or the precision the backend
// stores activations in.
enum class Exactness { as_stored, fp32 };

// out [rows, n_out] = inp [rows, n_in] . weight^T, plus residual [rows, n_out] where given
// (which may be out itself).
template <typename T>
void linear_forward(Backend<T>& be, Ptr<T> out, Ptr<const T> inp, const T* weight, int rows, int n_in, int n_out,
                    const T* residual = nullptr, Exactness exact = Exactness::as_stored) {
  GemmArgs<T> g{false, true, rows, n_out, n_in, T(1), inp, n_in, weight, n_in, T(residual ? 1 : 0), out, n_out,
                exact == Exactness::fp32};
  if (residual && static_cast<const void*>(residual) != out.raw()) g.c_in = residual;
  be.gemm(g);
}

// dinp [rows, n_in] = dout [rows, n_out] . weight, written (accumulate 0) or added (1).
template <typename T>
void linear_backward_input(Backend<T>& be, Ptr<T> dinp, Ptr<const T> dout, const T* weight, int rows, int n_in,
                           int n_out, T accumulate, Exactness exact = Exactness::as_stored) {
  be.gemm({false, false, rows, n_in, n_out, T(1), dout, n_out, weight, n_in, accumulate, dinp, n_in,
           exact == Exactness::fp32});
}

// dweight [n_out, n_in] = dout^T [n_out, rows] . inp [rows, n_in], written (accumulate 0: the
// first backward of a step) or added (1).
template <typename T>
void linear_backward_weight(Backend<T>& be, T* dweight, Ptr<const T> dout, Ptr<const T> inp, int rows, int n_in,
                            int n_out, T accumulate, Exactness exact = Exactness::as_stored) {
  be.gemm({true, false, n_out, n_in, rows, T(1), dout, n_out, inp, n_in, accumulate, dweight, n_in,
           exact == Exactness::fp32});
}

}  // namespace dsmoe
