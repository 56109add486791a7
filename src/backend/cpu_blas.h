// Typed wrappers over cblas sgemm/dgemm, used by the CPU backend only.
#pragma once
#include <cblas.h>

#include "backend/backend.h"

namespace dsmoe::cpu {

inline void gemm(const GemmArgs<float>& g) {
  cblas_sgemm(CblasRowMajor, g.trans_a ? CblasTrans : CblasNoTrans, g.trans_b ? CblasTrans : CblasNoTrans,
              g.m, g.n, g.k, g.alpha, g.a.get(), g.lda, g.b.get(), g.ldb, g.beta, g.c.get(), g.ldc);
}

inline void gemm(const GemmArgs<double>& g) {
  cblas_dgemm(CblasRowMajor, g.trans_a ? CblasTrans : CblasNoTrans, g.trans_b ? CblasTrans : CblasNoTrans,
              g.m, g.n, g.k, g.alpha, g.a.get(), g.lda, g.b.get(), g.ldb, g.beta, g.c.get(), g.ldc);
}

}  // namespace dsmoe::cpu
