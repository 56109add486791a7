// The CUDA backend against the CPU backend, op by op, on random inputs (fp32, and bf16 where
// the precision changes an op: products, attention). Skipped where no GPU is visible. Tolerance: both compute in fp32 with different summation orders; relative
// differences of a few 1e-6 per reduction, so 2e-5 relative (plus 1e-6 absolute) is ample.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <regex>
#include <string>

#include "backend/cpu_backend.h"
#include "backend/cuda_loader.h"
#include "util/bf16.h"
#include "util/rng.h"

namespace dsmoe {
namespace {

using Vec = std::vector<float>;

Vec random(size_t n, uint64_t seed, float scale = 1.f) {
  Rng r(seed);
  Vec v(n);
  for (auto& x : v) x = static_cast<float>(r.normal()) * scale;
  return v;
}

// |x - ref| / |ref| over the whole tensor.
double relative_error(const Vec& ref, const Vec& x) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    diff += (double(x[i]) - ref[i]) * (double(x[i]) - ref[i]);
    norm += double(ref[i]) * ref[i];
  }
  return std::sqrt(diff / norm);
}

class CudaVsCpu : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda_available(&why)) GTEST_SKIP() << "no GPU: " << why;
    gpu = make_cuda_backend(0);
    cpu = make_cpu_backend<float>();
  }
  // The same host data on both backends.
  struct Twin {
    Buf<float> c, g;
    int64_t n;
  };
  Twin twin(const Vec& v) {
    Twin t{Buf<float>(*cpu, v.size()), Buf<float>(*gpu, v.size()), (int64_t)v.size()};
    to_device(*cpu, t.c.data(), v);
    to_device(*gpu, t.g.data(), v);
    return t;
  }
  struct TwinIdx {
    Buf<int32_t> c, g;
  };
  TwinIdx twin_idx(const std::vector<int32_t>& v) {
    TwinIdx t{Buf<int32_t>(*cpu, v.size()), Buf<int32_t>(*gpu, v.size())};
    to_device(*cpu, t.c.data(), v);
    to_device(*gpu, t.g.data(), v);
    return t;
  }
  void expect_same(const Twin& t, const char* what, double rel = 2e-5) {
    Vec a = to_host(*cpu, t.c.data(), t.n), b = to_host(*gpu, t.g.data(), t.n);
    for (int64_t i = 0; i < t.n; ++i)
      ASSERT_NEAR(a[i], b[i], 1e-6 + rel * std::fabs(a[i])) << what << " element " << i;
  }
  // RMSNorm forward and backward, and SwiGLU forward and backward, on rows of width d.
  void expect_rmsnorm_alike(int R, int d, uint64_t seed) {
    auto x = twin(random(R * d, seed)), w = twin(random(d, seed + 1)), out = twin(Vec(R * d)), rstd = twin(Vec(R));
    cpu->rmsnorm_forward(out.c, rstd.c, x.c, w.c, R, d, 1e-6);
    gpu->rmsnorm_forward(out.g, rstd.g, x.g, w.g, R, d, 1e-6);
    expect_same(out, "rmsnorm");
    auto dout = twin(random(R * d, seed + 2)), dx = twin(random(R * d, seed + 3)), dw = twin(random(d, seed + 4));
    cpu->rmsnorm_backward(dx.c, dw.c, dout.c, x.c, w.c, rstd.c, R, d);
    gpu->rmsnorm_backward(dx.g, dw.g, dout.g, x.g, w.g, rstd.g, R, d);
    expect_same(dx, "rmsnorm dx");
    expect_same(dw, "rmsnorm dw", 1e-4);
  }
  // Without and with a row scale (the routed experts' gates).
  void expect_swiglu_alike(int R, int d, uint64_t seed) {
    auto gu = twin(random(R * 2 * d, seed)), dact = twin(random(R * d, seed + 1)), act = twin(Vec(R * d)),
         dgu = twin(Vec(R * 2 * d)), scale = twin(random(R, seed + 2)), dscale = twin(Vec(R));
    for (bool scaled : {false, true}) {
      SCOPED_TRACE(scaled ? "scaled rows" : "no scale");
      const float *sc = scaled ? scale.c.data() : nullptr, *sg = scaled ? scale.g.data() : nullptr;
      cpu->swiglu_forward(act.c, gu.c, sc, R, d);
      gpu->swiglu_forward(act.g, gu.g, sg, R, d);
      expect_same(act, "swiglu");
      cpu->swiglu_backward(dgu.c, scaled ? dscale.c.data() : nullptr, dact.c, gu.c, sc, R, d);
      gpu->swiglu_backward(dgu.g, scaled ? dscale.g.data() : nullptr, dact.g, gu.g, sg, R, d);
      expect_same(dgu, "swiglu backward");
    }
    expect_same(dscale, "swiglu dscale", 1e-4);
  }
  std::unique_ptr<Backend<float>> gpu, cpu;
};

TEST_F(CudaVsCpu, Gemm) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const int m = 37, n = 29, k = 51;
      auto a = twin(random(64 * 64, 1)), b = twin(random(64 * 64, 2)), c = twin(random(64 * 64, 3));
      auto args = [&](Buf<float>& A, Buf<float>& B, Buf<float>& C) {
        return GemmArgs<float>{ta, tb, m, n, k, 0.7f, A, 60, B, 62, 0.5f, C, 63};
      };
      cpu->gemm(args(a.c, b.c, c.c));
      gpu->gemm(args(a.g, b.g, c.g));
      expect_same(c, "gemm");
    }
}

// A long reduction into a small result (the router's weight gradient): every transpose, beta and
// a leading dimension wider than the result. fp32 in both, summation orders differ over 9000
// terms: ~sqrt(k) 2^-24 = 6e-6 relative error of the whole result, so 3e-5 is the band (TF32
// would be far outside it).
TEST_F(CudaVsCpu, GemmWithALongReduction) {
  const int m = 5, n = 7, k = 9000, ldc = 9;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      auto a = twin(random((size_t)m * k, 71)), b = twin(random((size_t)k * n, 72)), c = twin(random(m * ldc, 73));
      auto args = [&](Buf<float>& A, Buf<float>& B, Buf<float>& C) {
        return GemmArgs<float>{ta, tb, m, n, k, 0.7f, A, ta ? m : k, B, tb ? k : n, 0.5f, C, ldc, true};
      };
      cpu->gemm(args(a.c, b.c, c.c));
      gpu->gemm(args(a.g, b.g, c.g));
      const Vec want = to_host(*cpu, c.c.data(), c.n), got = to_host(*gpu, c.g.data(), c.n);
      EXPECT_LT(relative_error(want, got), 3e-5) << "trans " << ta << tb;
      for (int r = 0; r < m; ++r)  // the columns past n are not the product's: untouched
        for (int j = n; j < ldc; ++j) EXPECT_EQ(got[r * ldc + j], want[r * ldc + j]);
    }
}

// The router's exact fp32 products (a side of 63): logits = u W^T, the
// input gradient (k = 63) and the weight gradient (k = every token), each in every layout, with
// beta 0 and 1 and a result narrower than its leading dimension. Relative error of the whole
// result against the CPU's fp32 BLAS: summation orders differ over k terms, ~sqrt(k) 2^-24.
TEST_F(CudaVsCpu, GemmOfTheRoutersShapes) {
  struct Shape {
    int m, n, k;
  };
  for (const Shape& sh : {Shape{1500, 63, 1024}, Shape{1500, 1024, 63}, Shape{63, 1024, 9000}})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (float beta : {0.f, 1.f}) {
          const int ldc = sh.n + 1;
          auto a = twin(random((size_t)sh.m * sh.k, 81)), b = twin(random((size_t)sh.k * sh.n, 82)),
               c = twin(random((size_t)sh.m * ldc, 83));
          auto args = [&](Buf<float>& A, Buf<float>& B, Buf<float>& C) {
            return GemmArgs<float>{ta, tb,   sh.m, sh.n, sh.k, 0.7f, A, ta ? sh.m : sh.k, B, tb ? sh.k : sh.n,
                                   beta, C, ldc, true};
          };
          cpu->gemm(args(a.c, b.c, c.c));
          gpu->gemm(args(a.g, b.g, c.g));
          const Vec want = to_host(*cpu, c.c.data(), c.n), got = to_host(*gpu, c.g.data(), c.n);
          EXPECT_LT(relative_error(want, got), 2e-6 * std::sqrt((double)sh.k))
              << sh.m << " x " << sh.n << " x " << sh.k << " trans " << ta << tb << " beta " << beta;
          for (int r = 0; r < sh.m; ++r) EXPECT_EQ(got[(size_t)r * ldc + sh.n], want[(size_t)r * ldc + sh.n]);
        }
}

// Under bf16 precision the products round their inputs to bf16 (8 significant bits) and
// accumulate in fp32: relative error of the whole result ~ 2^-8 / sqrt-ish; 1e-2 is the band.
// Products marked fp32 (the router's) stay exact fp32.
TEST_F(CudaVsCpu, GemmUnderBf16PrecisionAndItsFp32Products) {
  auto bf16 = make_cuda_backend(0, /*bf16=*/true);
  const int m = 96, n = 80, k = 256;
  const Vec A = random(m * k, 31), B = random(k * n, 32);
  Buf<float> ac(*cpu, m * k), bc(*cpu, k * n), cc(*cpu, m * n);
  Buf<float> ag(*bf16, m * k), bg(*bf16, k * n), cg(*bf16, m * n);
  to_device(*cpu, ac.data(), A);
  to_device(*cpu, bc.data(), B);
  to_device(*bf16, ag.data(), A);
  to_device(*bf16, bg.data(), B);
  cpu->gemm({false, false, m, n, k, 1.f, ac, k, bc, n, 0.f, cc, n});
  const Vec ref = to_host(*cpu, cc.data(), m * n);
  auto error_of = [&](bool fp32) {
    bf16->gemm({false, false, m, n, k, 1.f, ag, k, bg, n, 0.f, cg, n, fp32});
    return relative_error(ref, to_host(*bf16, cg.data(), m * n));
  };
  const double rounded = error_of(false), exact = error_of(true);
  EXPECT_LT(rounded, 1e-2);
  EXPECT_GT(rounded, 1e-5) << "bf16 products must not be exact fp32 (is the precision ignored?)";
  EXPECT_LT(exact, 1e-6);
}

// A separate C input (a residual, GemmArgs::c_in) under fp32 and bf16 precision: C written from
// c_in, which stays as it was; C's prior contents (NaN) never read; with k = 0 (beta 1 there, as
// the CUDA backend asks), C = c_in.
TEST_F(CudaVsCpu, GemmAddsASeparateCInput) {
  auto bf16 = make_cuda_backend(0, /*bf16=*/true);
  const int m = 40, n = 24, k = 64, ldc = 32;
  const Vec A = random(m * k, 51), B = random(k * n, 52), R = random(m * ldc, 53);
  for (Backend<float>* be : {cpu.get(), gpu.get(), bf16.get()})
    for (int kk : {k, 0}) {
      SCOPED_TRACE((be == cpu.get() ? "cpu" : be == gpu.get() ? "cuda fp32" : "cuda bf16") + std::string(", k ") +
                   std::to_string(kk));
      Buf<float> a(*be, m * k), b(*be, k * n), c(*be, m * ldc), r(*be, m * ldc);
      to_device(*be, a.data(), A);
      to_device(*be, b.data(), B);
      to_device(*be, r.data(), R);
      to_device(*be, c.data(), Vec(m * ldc, std::nanf("")));
      const float beta = kk > 0 ? 0.5f : 1.f;
      be->gemm({false, false, m, n, kk, 1.f, a, k, b, n, beta, c, ldc, false, r.data()});
      const Vec got = to_host(*be, c.data(), m * ldc);
      EXPECT_EQ(to_host(*be, r.data(), m * ldc), R) << "c_in changed";
      double diff = 0, norm = 0;
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) {
          double want = beta * R[i * ldc + j];
          for (int q = 0; q < kk; ++q) want += double(A[i * k + q]) * B[q * n + j];
          diff += (got[i * ldc + j] - want) * (got[i * ldc + j] - want);
          norm += want * want;
        }
      EXPECT_LT(std::sqrt(diff / norm), be == bf16.get() ? 1e-2 : 1e-6);
    }
}

TEST_F(CudaVsCpu, GemmBatchOfProblemsOfDifferentShapes) {
  auto a = twin(random(40 * 40, 26)), b = twin(random(40 * 40, 27)), c = twin(random(40 * 40, 28));
  auto problems = [](Buf<float>& A, Buf<float>& B, Buf<float>& C) {
    return std::vector<GemmArgs<float>>{
        {false, true, 5, 7, 9, 1.f, A, 9, B, 9, 0.f, C, 7},
        {false, false, 0, 7, 9, 1.f, A, 9, B, 7, 0.f, C, 7},  // no rows: nothing to do
        {true, false, 6, 4, 3, 0.5f, A.data() + 100, 6, B.data() + 200, 4, 1.f, C.data() + 100, 4},
        {false, true, 8, 3, 0, 1.f, A, 1, B, 1, 0.f, C.data() + 300, 3},  // k = 0: C = 0
        {false, false, 11, 5, 13, 1.f, A.data() + 500, 13, B.data() + 700, 5, 1.f, C.data() + 600, 5}};
  };
  cpu->gemm_batch(problems(a.c, b.c, c.c));
  gpu->gemm_batch(problems(a.g, b.g, c.g));
  expect_same(c, "gemm_batch");
}

// bf16 rounding to nearest even, on the host: the reference inputs of a bf16 product.
Vec rounded_to_bf16(Vec v) {
  for (float& x : v) x = bf16_value(bf16_bits(x));
  return v;
}

// Floats on a backend, stored in fp32 or in bf16 (rounded to nearest even): an op's operand in
// either storage, written and read back as floats.
class Stored {
 public:
  Stored(Backend<float>& be, const Vec& v, bool bf16) : be_(be), bf16_(bf16), n_(v.size()) {
    if (!bf16) {
      f_.reset(be, n_);
      to_device(be, f_.data(), v);
      return;
    }
    std::vector<uint16_t> h(n_);
    for (size_t i = 0; i < n_; ++i) h[i] = bf16_bits(v[i]);
    b_.reset(be, n_);
    to_device(be, b_.data(), h);
  }
  Ptr<float> p() { return bf16_ ? Ptr<float>::bf16(b_.data()) : Ptr<float>(f_.data()); }
  Vec read() {
    if (!bf16_) return to_host(be_, f_.data(), n_);
    const std::vector<uint16_t> h = to_host(be_, b_.data(), n_);
    Vec v(n_);
    for (size_t i = 0; i < n_; ++i) v[i] = bf16_value(h[i]);
    return v;
  }

 private:
  Backend<float>& be_;
  bool bf16_;
  size_t n_;
  Buf<float> f_;
  Buf<uint16_t> b_;
};

// A batch under bf16 whose inputs overlap, interleave (the gate and up halves of one buffer),
// sit at odd offsets and partly in the registered weights: every product equals the fp32
// product of the bf16-rounded inputs (fp32 accumulation: only the summation order differs).
// Writing the weights (a copy in, an optimizer step) is seen by the next product.
TEST_F(CudaVsCpu, GemmBatchUnderBf16ReadsEachInputWhereItLies) {
  auto bf16 = make_cuda_backend(0, /*bf16=*/true);
  const int W = 3000, X = 4000, C = 3000;
  Vec w = random(W, 61), x = random(X, 62), c0 = random(C, 63);
  Buf<float> wg(*bf16, W), xg(*bf16, X), cg(*bf16, C);
  bf16->set_weights(wg.data(), W);
  auto problems = [](float* Wt, float* Xt, float* Ct) {
    return std::vector<GemmArgs<float>>{
        {false, true, 17, 9, 33, 1.f, Xt + 3, 40, Wt + 1, 33, 0.f, Ct, 9},               // x rows, weight rows
        {false, true, 17, 9, 20, 1.f, Xt + 3, 40, Wt + 400, 20, 0.f, Ct + 200, 9},       // the same x again
        {false, false, 17, 11, 20, 1.f, Xt + 23, 40, Xt + 1001, 11, 1.f, Ct + 400, 11},  // interleaved half
        {true, false, 12, 7, 17, 0.5f, Xt + 2000, 12, Wt + 1500, 7, 1.f, Ct + 700, 7},
        {false, true, 5, 6, 0, 1.f, Xt, 1, Wt, 1, 0.f, Ct + 900, 6},                      // k = 0: C = 0
        {false, false, 30, 8, 25, 1.f, Xt + 3000, 25, Wt + 2000, 8, 0.f, Ct + 1000, 8}};
  };
  auto check = [&](const char* what) {
    to_device(*bf16, cg.data(), c0);
    bf16->gemm_batch(problems(wg, xg, cg));
    Buf<float> wc(*cpu, W), xc(*cpu, X), cc(*cpu, C);
    to_device(*cpu, wc.data(), rounded_to_bf16(w));
    to_device(*cpu, xc.data(), rounded_to_bf16(x));
    to_device(*cpu, cc.data(), c0);
    cpu->gemm_batch(problems(wc, xc, cc));
    const Vec want = to_host(*cpu, cc.data(), C), got = to_host(*bf16, cg.data(), C);
    for (int i = 0; i < C; ++i) ASSERT_NEAR(got[i], want[i], 1e-5 + 1e-5 * std::fabs(want[i])) << what << " " << i;
  };
  to_device(*bf16, wg.data(), w);
  to_device(*bf16, xg.data(), x);
  check("first");
  w = random(W, 64);  // new weights copied in
  to_device(*bf16, wg.data(), w);
  check("after a copy into the weights");
  Buf<float> grad(*bf16, W), m(*bf16, W), v(*bf16, W);  // an optimizer step: w - lr * sign(g)
  to_device(*bf16, grad.data(), random(W, 65));
  bf16->adamw(wg, grad, m, v, W, 0.1, 0.9, 0.95, 1e-8, 0.0, 1, 1.0);
  w = to_host(*bf16, wg.data(), W);
  check("after an optimizer step");
}

// Operands stored in bf16 (Backend::bf16_storage, src/backend/ptr.h): each op reads the bf16
// values where they lie and rounds what it writes to bf16, so it equals the CPU's fp32 op on the
// rounded inputs with its result rounded. Tolerance: exact where the op only moves or scales
// values; one bf16 unit (2^-8 relative) where the GPU's expf may differ from the CPU's in the
// last fp32 bit before rounding; fp32's 2e-5 for fp32 results. Row widths 48 and 22 take the
// 4-element and the 1-element kernels.
TEST_F(CudaVsCpu, OpsOnOperandsStoredInBf16) {
  auto bf16 = make_cuda_backend(0, /*bf16=*/true);
  ASSERT_TRUE(bf16->bf16_storage());
  ASSERT_FALSE(gpu->bf16_storage());
  auto low = [&](const Vec& v) { return Stored(*bf16, v, true); };
  auto on_cpu = [&](const Vec& v) {
    auto b = std::make_unique<Buf<float>>(*cpu, v.size());
    to_device(*cpu, b->data(), v);
    return b;
  };
  auto cpu_vec = [&](Buf<float>& b) { return to_host(*cpu, b.data(), b.size()); };
  auto expect_near = [](const Vec& want, const Vec& got, double rel, const std::string& what) {
    ASSERT_EQ(want.size(), got.size());
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(got[i], want[i], 1e-6 + rel * std::fabs(want[i])) << what << " element " << i;
  };
  const double exact = 0, unit = 1.0 / 256, fp32 = 2e-5;
  for (const int d : {48, 22}) {
    SCOPED_TRACE("row width " + std::to_string(d));
    const int R = 37, K = 3, T = 12;  // R rows; T tokens of K pairs
    const Vec x = random(R * d, 81);
    std::vector<int32_t> idx(R);
    for (int i = 0; i < R; ++i) idx[i] = i % 5 == 2 ? -1 : (i * 7) % R;
    Buf<int32_t> ig(*bf16, R), ic(*cpu, R);
    to_device(*bf16, ig.data(), idx);
    to_device(*cpu, ic.data(), idx);
    // gather: fp32 -> bf16 and bf16 -> bf16
    Buf<float> xg(*bf16, R * d);
    to_device(*bf16, xg.data(), x);
    Stored out = low(Vec(R * d)), again = low(Vec(R * d));
    bf16->gather_rows(out.p(), xg, ig, R, d);
    auto xc = on_cpu(x), oc = on_cpu(Vec(R * d));
    cpu->gather_rows(*oc, *xc, ic, R, d);
    const Vec gathered = rounded_to_bf16(cpu_vec(*oc));
    expect_near(gathered, out.read(), exact, "gather into bf16");
    Stored xl = low(x);
    bf16->gather_rows(again.p(), xl.p(), ig, R, d);
    expect_near(gathered, again.read(), exact, "gather from bf16");

    // SwiGLU forward and backward with row scales: gu, act, dgu in bf16, dact and scales in fp32
    const Vec gu = rounded_to_bf16(random(R * 2 * d, 82)), dact = random(R * d, 83), scale = random(R, 87);
    Stored gul = low(gu), act = low(Vec(R * d)), dgu = low(Vec(R * 2 * d));
    Buf<float> dactg(*bf16, R * d), scaleg(*bf16, R), dscaleg(*bf16, R);
    to_device(*bf16, dactg.data(), dact);
    to_device(*bf16, scaleg.data(), scale);
    bf16->swiglu_forward(act.p(), gul.p(), scaleg, R, d);
    bf16->swiglu_backward(dgu.p(), dscaleg, dactg, gul.p(), scaleg, R, d);
    auto guc = on_cpu(gu), actc = on_cpu(Vec(R * d)), dactc = on_cpu(dact), dguc = on_cpu(Vec(R * 2 * d)),
         scalec = on_cpu(scale), dscalec = on_cpu(Vec(R));
    cpu->swiglu_forward(*actc, *guc, *scalec, R, d);
    cpu->swiglu_backward(*dguc, *dscalec, *dactc, *guc, *scalec, R, d);
    expect_near(rounded_to_bf16(cpu_vec(*actc)), act.read(), unit, "swiglu in bf16");
    expect_near(rounded_to_bf16(cpu_vec(*dguc)), dgu.read(), unit, "swiglu backward in bf16");
    expect_near(cpu_vec(*dscalec), to_host(*bf16, dscaleg.data(), R), 1e-4, "swiglu dscale from bf16 gu");

    // The combine and its backward over bf16 rows y [R, d]; out and dout in fp32.
    std::vector<int32_t> pair_row(T * K);
    for (int p = 0; p < T * K; ++p) pair_row[p] = p % 7 == 3 ? -1 : (p * 5) % R;
    Buf<int32_t> prg(*bf16, T * K), prc(*cpu, T * K);
    to_device(*bf16, prg.data(), pair_row);
    to_device(*cpu, prc.data(), pair_row);
    const Vec y = rounded_to_bf16(random(R * d, 84)), acc0 = random(T * d, 86);
    Stored yl = low(y), dy = low(Vec(R * d));
    Buf<float> accg(*bf16, T * d);
    to_device(*bf16, accg.data(), acc0);
    bf16->combine_rows(accg, yl.p(), prg, T, K, d);
    bf16->combine_rows_backward(dy.p(), accg, prg, T, K, d);
    auto yc = on_cpu(y), accc = on_cpu(acc0), dyc = on_cpu(Vec(R * d));
    cpu->combine_rows(*accc, *yc, prc, T, K, d);
    cpu->combine_rows_backward(*dyc, *accc, prc, T, K, d);
    expect_near(cpu_vec(*accc), to_host(*bf16, accg.data(), T * d), fp32, "combine of bf16 rows");
    // dy = dout rounded once on both sides (dout agrees to fp32 tolerance)
    expect_near(rounded_to_bf16(cpu_vec(*dyc)), dy.read(), unit, "combine backward dy in bf16");

    // RMSNorm into bf16 (x, w, rstd in fp32)
    const Vec nw = random(d, 88);
    Buf<float> nwg(*bf16, d), rstdg(*bf16, R);
    to_device(*bf16, nwg.data(), nw);
    Stored normed = low(Vec(R * d));
    bf16->rmsnorm_forward(normed.p(), rstdg, xg, nwg, R, d, 1e-6);
    auto nwc = on_cpu(nw), rstdc = on_cpu(Vec(R)), normc = on_cpu(Vec(R * d));
    cpu->rmsnorm_forward(*normc, *rstdc, *xc, *nwc, R, d, 1e-6);
    expect_near(rounded_to_bf16(cpu_vec(*normc)), normed.read(), unit, "rmsnorm into bf16");

    // A product reading a bf16 operand and writing bf16: C [R, 8] = A [R, d] B^T, B [8, d] in fp32.
    const Vec b = random(8 * d, 87);
    Buf<float> bg(*bf16, 8 * d);
    to_device(*bf16, bg.data(), b);
    Stored c = low(Vec(R * 8));
    bf16->gemm({false, true, R, 8, d, 1.f, xl.p(), d, bg, d, 0.f, c.p(), 8});
    auto ac = on_cpu(rounded_to_bf16(x)), bc = on_cpu(rounded_to_bf16(b)), cc = on_cpu(Vec(R * 8));
    cpu->gemm({false, true, R, 8, d, 1.f, *ac, d, *bc, d, 0.f, *cc, 8});
    expect_near(rounded_to_bf16(cpu_vec(*cc)), c.read(), unit, "product into bf16");
  }
}

// Many rows of one token (more than the kernel lists at once) and columns that are not a
// multiple of its tile. A small table takes 8 slices of the rows, summed in another order than the
// CPU's; a table over 32 MB takes one, with the CPU's sums in the CPU's order.
TEST_F(CudaVsCpu, EmbeddingBackwardOfManyRepeatedTokens) {
  const int R = 5000, d = 1030;
  for (int V : {3, 8200}) {
    SCOPED_TRACE("vocabulary " + std::to_string(V));
    std::vector<int32_t> tok(R);
    for (int i = 0; i < R; ++i) tok[i] = i % 7 == 0 ? 2 : i % 11 == 0 ? V - 1 : 0;  // token 1 never
    auto tk = twin_idx(tok);
    auto dout = twin(random((size_t)R * d, 66)), dtable = twin(random((size_t)V * d, 67));
    cpu->embedding_backward(dtable.c, tk.c, dout.c, R, d, V);
    gpu->embedding_backward(dtable.g, tk.g, dout.g, R, d, V);
    if (V > 3) {
      expect_same(dtable, "embedding backward", 0);
      continue;
    }
    // Sums of up to 3,900 values of about 1 (|sum| up to ~100): fp32 reassociation moves them by
    // ~1e-4 (a random walk of 3,900 roundings of 6e-8 relative).
    const Vec a = to_host(*cpu, dtable.c.data(), dtable.n), b = to_host(*gpu, dtable.g.data(), dtable.n);
    for (int64_t i = 0; i < dtable.n; ++i) ASSERT_NEAR(a[i], b[i], 1e-3) << "element " << i;
  }
}

TEST_F(CudaVsCpu, NormsEmbeddingRopeSwiglu) {
  const int R = 70, d = 48, V = 20, H = 4, hd = d / H, B = 2, T = R / B;
  expect_rmsnorm_alike(R, d, 4);
  expect_rmsnorm_alike(1100, 64, 21);  // more rows than the one-pass backward's blocks
  expect_rmsnorm_alike(5, 2056, 22);   // rows of several vectors a thread
  auto dout = twin(random(R * d, 6));

  std::vector<int32_t> tok(R);
  for (int i = 0; i < R; ++i) tok[i] = (i * 7) % V;
  auto tk = twin_idx(tok);
  auto table = twin(random(V * d, 9)), emb = twin(Vec(R * d)), dtable = twin(random(V * d, 10));
  cpu->embedding_forward(emb.c, tk.c, table.c, R, d);
  gpu->embedding_forward(emb.g, tk.g, table.g, R, d);
  expect_same(emb, "embedding");
  cpu->embedding_backward(dtable.c, tk.c, dout.c, R, d, V);
  gpu->embedding_backward(dtable.g, tk.g, dout.g, R, d, V);
  expect_same(dtable, "embedding backward");

  auto qkv = twin(random(R * 3 * d, 11));
  auto bf16 = make_cuda_backend(0, /*bf16=*/true);
  for (bool inverse : {false, true}) {
    Stored low(*bf16, to_host(*cpu, qkv.c.data(), qkv.n), true);
    const Vec stored = low.read();
    cpu->rope(qkv.c, B, T, H, hd, 10000.0, inverse, 0);
    gpu->rope(qkv.g, B, T, H, hd, 10000.0, inverse, 0);
    expect_same(qkv, "rope");
    // in bf16 storage: the rotation of the stored values, rounded once
    auto ref = twin(stored);
    cpu->rope(ref.c, B, T, H, hd, 10000.0, inverse, 0);
    bf16->rope(low.p(), B, T, H, hd, 10000.0, inverse, 0);
    const Vec want = rounded_to_bf16(to_host(*cpu, ref.c.data(), ref.n)), got = low.read();
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(got[i], want[i], 1e-6 + std::fabs(want[i]) / 128) << "rope in bf16 storage, element " << i;
  }
  expect_swiglu_alike(R, d, 12);
}

// The row and elementwise kernels go 4 elements at a time where widths and pointers allow
// (the tests above); here every one takes its 1-element path: rows of 22, lengths of 1001.
TEST_F(CudaVsCpu, RowKernelsOnWidthsThatAreNotMultiplesOfFour) {
  const int R = 30, d = 22, n = 1001;
  expect_rmsnorm_alike(R, d, 91);
  expect_swiglu_alike(R, d, 96);
  auto x = twin(random(R * d, 97));
  auto o = twin_idx({0, 3, 3, 7}), rows = twin_idx({4, 1, 9, 2, 2, 0, 5});
  auto sum = twin(random(3 * d, 98));
  cpu->sum_rows(sum.c, x.c, o.c, rows.c, 3, d, true);
  gpu->sum_rows(sum.g, x.g, o.g, rows.g, 3, d, true);
  expect_same(sum, "sum_rows");
  auto p = twin(random(n, 98)), g = twin(random(n, 99)), m = twin(random(n, 100, 0.1f)), v = twin(Vec(n, 0.01f));
  cpu->adamw(p.c, g.c, m.c, v.c, n, 1e-3, 0.9, 0.95, 1e-8, 0.1, 3, 0.5);
  gpu->adamw(p.g, g.g, m.g, v.g, n, 1e-3, 0.9, 0.95, 1e-8, 0.1, 3, 0.5);
  expect_same(p, "adamw param");
  expect_same(v, "adamw v");
  cpu->add(p.c, g.c, n);
  gpu->add(p.g, g.g, n);
  expect_same(p, "add");
}

// Attention forward then backward on `be`: out [B*T, d] and dqkv [B*T, 3d]. dqkv starts as
// garbage: backward writes it.
struct AttentionResult {
  Vec out, dqkv;
};
// bf16_storage: qkv, out and dqkv stored in bf16.
AttentionResult run_attention(Backend<float>& be, const Vec& qkv, const Vec& dout, int B, int T, int H, int hd,
                              bool bf16_storage = false) {
  const int64_t n = (int64_t)B * T * H * hd;
  Stored q(be, qkv, bf16_storage), o(be, Vec(n), bf16_storage), dq(be, random(3 * n, 99, 1e3f), bf16_storage);
  Buf<float> g(be, n), saved(be, be.attention_saved_size(B, T, H)), scratch(be, be.attention_scratch_size(B, T, H));
  to_device(be, g.data(), dout);
  be.attention_forward(o.p(), saved, q.p(), B, T, H, hd);
  be.attention_backward(dq.p(), scratch, g, q.p(), o.p(), saved, B, T, H, hd);
  return {o.read(), dq.read()};
}

void expect_close(const Vec& ref, const Vec& x, double rel, const char* what) {
  ASSERT_EQ(ref.size(), x.size());
  for (size_t i = 0; i < ref.size(); ++i)
    ASSERT_NEAR(ref[i], x[i], 1e-6 + rel * std::fabs(ref[i])) << what << " element " << i;
}

// The fused kernels against the CPU's materialized softmax: fp32 element by element, bf16 (inputs
// of every product rounded to 8 significant bits) within 1e-2 of the whole tensor. Shapes cover
// sequences that are not multiples of the tiles (16..128 rows) and head dims that are padded.
TEST_F(CudaVsCpu, AttentionForwardAndBackward) {
  auto bf16 = make_cuda_backend(0, /*bf16=*/true);
  struct Shape {
    int B, T, H, hd;
  };
  for (const Shape& s : {Shape{3, 33, 4, 16}, Shape{2, 100, 2, 64}, Shape{1, 257, 3, 64}, Shape{2, 130, 2, 8},
                         Shape{1, 77, 2, 20}, Shape{1, 200, 2, 32}, Shape{1, 150, 1, 128}, Shape{2, 50, 3, 6}}) {
    SCOPED_TRACE("B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) + " H=" + std::to_string(s.H) +
                 " hd=" + std::to_string(s.hd));
    const int64_t n = (int64_t)s.B * s.T * s.H * s.hd;
    const Vec qkv = random(3 * n, 13, 0.5f), dout = random(n, 14);
    const AttentionResult want = run_attention(*cpu, qkv, dout, s.B, s.T, s.H, s.hd);
    const AttentionResult fp32 = run_attention(*gpu, qkv, dout, s.B, s.T, s.H, s.hd);
    expect_close(want.out, fp32.out, 2e-5, "attention out");
    expect_close(want.dqkv, fp32.dqkv, 1e-4, "dqkv");
    const AttentionResult low = run_attention(*bf16, qkv, dout, s.B, s.T, s.H, s.hd);
    EXPECT_LT(relative_error(want.out, low.out), 1e-2) << "bf16 attention out";
    EXPECT_LT(relative_error(want.dqkv, low.dqkv), 1e-2) << "bf16 dqkv";
    // qkv, out and dqkv stored in bf16: the kernels read the stored q, k, v exactly as they
    // round fp32 ones, so out is the fp32-stored run's out on rounded inputs, rounded once; dqkv
    // also sees out rounded (in rowsum(dout * out)) and is rounded once.
    const Vec q16 = rounded_to_bf16(qkv);
    const AttentionResult on16 = run_attention(*bf16, q16, dout, s.B, s.T, s.H, s.hd);
    const AttentionResult stored = run_attention(*bf16, q16, dout, s.B, s.T, s.H, s.hd, true);
    EXPECT_EQ(stored.out, rounded_to_bf16(on16.out)) << "attention out stored in bf16";
    EXPECT_LT(relative_error(on16.dqkv, stored.dqkv), 1e-2) << "dqkv stored in bf16";
    EXPECT_LT(relative_error(want.dqkv, stored.dqkv), 1.5e-2) << "dqkv stored in bf16 against fp32";
  }
}

// A long sequence keeps one statistic per query, never a [T, T] matrix.
TEST_F(CudaVsCpu, AttentionLongSequenceKeepsRowStatisticsOnly) {
  const int B = 1, T = 2048, H = 2, hd = 64;
  const int64_t n = (int64_t)B * T * H * hd;
  const Vec qkv = random(3 * n, 15, 0.5f), dout = random(n, 16);
  const AttentionResult want = run_attention(*cpu, qkv, dout, B, T, H, hd);
  for (bool bf16 : {false, true}) {
    SCOPED_TRACE(bf16 ? "bf16" : "fp32");
    auto be = make_cuda_backend(0, bf16);
    EXPECT_EQ(be->attention_saved_size(B, T, H), (int64_t)B * H * T);
    EXPECT_EQ(be->attention_scratch_size(B, T, H), (int64_t)B * H * T);
    const AttentionResult got = run_attention(*be, qkv, dout, B, T, H, hd);
    EXPECT_LT(be->peak_bytes(), (size_t)B * H * T * T * sizeof(float));
    if (bf16) {
      EXPECT_LT(relative_error(want.out, got.out), 1e-2);
      EXPECT_LT(relative_error(want.dqkv, got.dqkv), 1e-2);
    } else {
      expect_close(want.out, got.out, 2e-5, "attention out");
      expect_close(want.dqkv, got.dqkv, 1e-4, "dqkv");
    }
  }
}

// A KV cache's new rows: their rotation at positions first.., and their queries' attention over
// the rows before them too, as on the CPU; in bf16 storage, the stored rows' attention (fp32
// inside) rounded once.
TEST_F(CudaVsCpu, AttentionQueriesAndRopeFromAFirstPosition) {
  auto bf16 = make_cuda_backend(0, /*bf16=*/true);
  struct Case {
    int first, n, H, hd;
  };
  for (const Case& c : {Case{0, 33, 4, 16}, Case{40, 1, 2, 64}, Case{250, 7, 3, 128}, Case{5, 1, 2, 6},
                        Case{3000, 2, 2, 64}}) {
    SCOPED_TRACE("first=" + std::to_string(c.first) + " n=" + std::to_string(c.n) + " H=" + std::to_string(c.H) +
                 " hd=" + std::to_string(c.hd));
    const int d = c.H * c.hd;
    const int64_t at = (int64_t)c.first * 3 * d;
    auto qkv = twin(random((int64_t)(c.first + c.n) * 3 * d, 31, 0.5f)), out = twin(Vec(c.n * d));
    cpu->rope(qkv.c.data() + at, 1, c.n, c.H, c.hd, 10000.0, false, c.first);
    gpu->rope(qkv.g.data() + at, 1, c.n, c.H, c.hd, 10000.0, false, c.first);
    expect_same(qkv, "rope from a first position");
    cpu->attention_queries(out.c, qkv.c, c.first, c.n, c.H, c.hd);
    gpu->attention_queries(out.g, qkv.g, c.first, c.n, c.H, c.hd);
    expect_same(out, "attention_queries");

    const Vec q16 = rounded_to_bf16(to_host(*cpu, qkv.c.data(), qkv.n));
    auto ref = twin(q16);
    cpu->attention_queries(out.c, ref.c, c.first, c.n, c.H, c.hd);
    const Vec want = rounded_to_bf16(to_host(*cpu, out.c.data(), out.n));
    Stored low_qkv(*bf16, q16, true), low_out(*bf16, Vec(c.n * d), true);
    bf16->attention_queries(low_out.p(), low_qkv.p(), c.first, c.n, c.H, c.hd);
    const Vec got = low_out.read();
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(got[i], want[i], 1e-6 + std::fabs(want[i]) / 128) << "bf16 storage, element " << i;
  }
}

// Speed of the fused kernels at the gpu_small shape and a long one (run with
// --gtest_also_run_disabled_tests). Causal FLOPs: forward 2 * 2 * B*H*T*T*hd / 2, backward 2.5x.
// The router's per-token part: the GPU chooses the same experts (the CPU's expf and CUDA's may
// differ in the last bit, far below the gaps between these random scores) and gives the same
// scores and gates to float rounding, for every score kind, with a bias and device limiting.
TEST_F(CudaVsCpu, RouteTokensChooseTheSameExperts) {
  const int R = 1000, N = 64;
  auto logits = twin(random(R * N, 30, 2.f)), scores = twin(Vec(R * N));
  Vec bias_h = random(N, 31, 0.1f);
  Buf<float> bias_c(*cpu, N), bias_g(*gpu, N);
  to_device(*cpu, bias_c.data(), bias_h);
  to_device(*gpu, bias_g.data(), bias_h);
  for (ScoreKind kind : {ScoreKind::softmax, ScoreKind::softmax_topk, ScoreKind::sigmoid})
    for (int route_devices : {0, 2}) {
      const RouteRowSpec spec{N, 6, kind, true, 8, route_devices};
      SCOPED_TRACE("score " + std::to_string(static_cast<int>(kind)) + ", route_devices " +
                   std::to_string(route_devices));
      auto gate = twin(Vec(R * 6));
      TwinIdx sel{Buf<int32_t>(*cpu, R * 6), Buf<int32_t>(*gpu, R * 6)};
      cpu->route_tokens(scores.c, sel.c, gate.c, logits.c, bias_c, spec, R);
      gpu->route_tokens(scores.g, sel.g, gate.g, logits.g, bias_g, spec, R);
      const std::vector<int32_t> sc = to_host(*cpu, sel.c.data(), R * 6), sg = to_host(*gpu, sel.g.data(), R * 6);
      ASSERT_EQ(sc, sg);
      if (route_devices > 0)
        for (int t = 0; t < R; ++t) {
          std::vector<int> groups;
          for (int k = 0; k < 6; ++k) groups.push_back(sc[t * 6 + k] / 8);
          std::sort(groups.begin(), groups.end());
          EXPECT_LE(std::unique(groups.begin(), groups.end()) - groups.begin(), 2) << "token " << t;
        }
      expect_same(scores, "scores");
      expect_same(gate, "gates");
    }
}

// The dispatcher's plan (routing/sort_pairs.h): the same stable sort of (token, expert) pairs by
// expert, over many chunks and a partial one, experts chosen unevenly (some by no pair).
TEST_F(CudaVsCpu, SortPairsAsTheHost) {
  struct Shape {
    int tokens, k, n_experts;
  };
  for (const Shape& sh : {Shape{3000, 7, 63}, Shape{777, 6, 300}, Shape{1, 1, 5}, Shape{70, 2, 2}}) {
    SCOPED_TRACE(std::to_string(sh.tokens) + " tokens, k " + std::to_string(sh.k) + ", " +
                 std::to_string(sh.n_experts) + " experts");
    const int64_t pairs = (int64_t)sh.tokens * sh.k, N = sh.n_experts;
    std::vector<int32_t> sel(pairs);
    Rng rng(sh.tokens);
    for (auto& e : sel) e = static_cast<int32_t>(std::min<double>(N - 1, N * std::pow(rng.uniform(), 3)));
    auto run = [&](Backend<float>& be) {
      Buf<int32_t> sel_b(be, pairs), counts(be, N), pos(be, pairs), row_token(be, pairs), token_rows(be, pairs),
          hist(be, sort_chunks(pairs) * N);
      to_device(be, sel_b.data(), sel);
      be.sort_pairs(counts, pos, row_token, token_rows, hist, sel_b, sh.tokens, sh.k, sh.n_experts);
      return std::vector<std::vector<int32_t>>{to_host(be, counts.data(), N), to_host(be, pos.data(), pairs),
                                               to_host(be, row_token.data(), pairs),
                                               to_host(be, token_rows.data(), pairs)};
    };
    const auto c = run(*cpu), g = run(*gpu);
    EXPECT_EQ(c[0], g[0]) << "counts";
    EXPECT_EQ(c[1], g[1]) << "each pair's row";
    EXPECT_EQ(c[2], g[2]) << "each row's token";
    EXPECT_EQ(c[3], g[3]) << "each token's rows";
  }
}

// The balance statistics and the router's backward (routing/route_stats.h), from the same choices:
// selection counts exactly, score sums, balance terms and dlogits to rounding; the sequence-wise
// loss takes its counts per sequence.
TEST_F(CudaVsCpu, RouterStatisticsAndBackward) {
  const int R = 1000, N = 64, K = 6;
  auto logits = twin(random(R * N, 40, 2.f)), scores = twin(Vec(R * N)), gate = twin(Vec(R * K));
  auto dgate = twin(random(R * K, 41)), dlogits = twin(Vec(R * N));
  Buf<float> bias_c(*cpu, N), bias_g(*gpu, N);
  TwinIdx sel{Buf<int32_t>(*cpu, R * K), Buf<int32_t>(*gpu, R * K)};
  for (ScoreKind kind : {ScoreKind::softmax, ScoreKind::softmax_topk, ScoreKind::sigmoid})
    for (int seq_len : {0, 250}) {
      SCOPED_TRACE("score " + std::to_string(static_cast<int>(kind)) + ", seq_len " + std::to_string(seq_len));
      RouteStatsSpec spec;
      spec.row = {N, K, kind, false, 8, 0};
      spec.expert_alpha = 0.01, spec.device_alpha = 0.02, spec.comm_alpha = 0.03;
      if (seq_len > 0) spec.seq_alpha = 0.04, spec.seq_len = spec.chunk = seq_len;
      spec.tokens_global = 2 * R;  // as if another rank held as many tokens
      cpu->route_tokens(scores.c, sel.c, gate.c, logits.c, bias_c, spec.row, R);
      gpu->route_tokens(scores.g, sel.g, gate.g, logits.g, bias_g, spec.row, R);
      ASSERT_EQ(to_host(*cpu, sel.c.data(), R * K), to_host(*gpu, sel.g.data(), R * K));
      const int W = spec.columns(), chunks = spec.chunks(R);
      auto stats = [&](Backend<float>& be, Buf<float>& sc, Buf<int32_t>& se) {
        Buf<double> partial(be, chunks * W), totals(be, W + 1), balance(be, N + kBalanceLosses);
        be.router_statistics(partial, totals, sc, se, spec, R);
        be.router_balance(balance, totals, spec);
        return std::make_tuple(to_host(be, partial.data(), chunks * W), to_host(be, totals.data(), W + 1),
                               to_host(be, balance.data(), N + kBalanceLosses), std::move(partial),
                               std::move(balance));
      };
      auto [pc, tc, bc, partial_c, balance_c] = stats(*cpu, scores.c, sel.c);
      auto [pg, tg, bg, partial_g, balance_g] = stats(*gpu, scores.g, sel.g);
      double selections = 0;
      for (int j = 0; j < N; ++j) selections += tc[j];
      EXPECT_EQ(selections, R * K);
      for (int c = 0; c < chunks; ++c)
        for (int j = 0; j < N + 8; ++j) EXPECT_EQ(pc[c * W + j], pg[c * W + j]) << "counts of chunk " << c;
      for (int j = 0; j <= W; ++j) EXPECT_NEAR(tc[j], tg[j], 1e-5 * (1 + std::abs(tc[j]))) << "total " << j;
      for (int j = 0; j < N + kBalanceLosses; ++j) EXPECT_NEAR(bc[j], bg[j], 1e-6 * (1 + std::abs(bc[j]))) << j;
      EXPECT_GT(bc[N + kAuxLoss], 0);
      EXPECT_EQ(bc[N + kLossSeq] > 0, seq_len > 0);
      cpu->router_backward(dlogits.c, dgate.c, scores.c, sel.c, logits.c, balance_c, partial_c, spec, 0.5, R);
      gpu->router_backward(dlogits.g, dgate.g, scores.g, sel.g, logits.g, balance_g, partial_g, spec, 0.5, R);
      expect_same(dlogits, "dlogits", 1e-4);
    }
}

TEST_F(CudaVsCpu, DISABLED_AttentionSpeed) {
  struct Shape {
    int B, T, H, hd;
  };
  for (bool bf16 : {true, false})
    for (const Shape& s : {Shape{16, 1024, 16, 64}, Shape{2, 4096, 16, 64}, Shape{16, 1024, 8, 128}}) {
      auto be = make_cuda_backend(0, bf16);
      const int64_t n = (int64_t)s.B * s.T * s.H * s.hd;
      Buf<float> q(*be, 3 * n), o(*be, n), g(*be, n), dq(*be, 3 * n),
          saved(*be, be->attention_saved_size(s.B, s.T, s.H)), scratch(*be, be->attention_scratch_size(s.B, s.T, s.H));
      to_device(*be, q.data(), random(3 * n, 17, 0.5f));
      to_device(*be, g.data(), random(n, 18));
      auto sync = [&] { to_host(*be, o.data(), 1); };
      auto seconds = [&](auto f) {
        f();
        sync();
        const int reps = 10;
        const auto t0 = std::chrono::steady_clock::now();
        for (int r = 0; r < reps; ++r) f();
        sync();
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
      };
      const double fwd = seconds([&] { be->attention_forward(o, saved, q, s.B, s.T, s.H, s.hd); });
      const double bwd = seconds([&] { be->attention_backward(dq, scratch, g, q, o, saved, s.B, s.T, s.H, s.hd); });
      const double flops = 2.0 * s.B * s.H * s.T * s.T * s.hd;
      std::printf("attention %s B=%d T=%d H=%d hd=%d: forward %.3f ms %.1f TFLOP/s, backward %.3f ms %.1f TFLOP/s\n",
                  bf16 ? "bf16" : "fp32", s.B, s.T, s.H, s.hd, fwd * 1e3, flops / fwd * 1e-12, bwd * 1e3,
                  2.5 * flops / bwd * 1e-12);
    }
}

TEST_F(CudaVsCpu, CrossEntropyRowsAdamwReductions) {
  const int R = 50, V = 77, d = 24, K = 3;
  auto logits = twin(random(R * V, 15, 3.f)), losses = twin(Vec(R));
  std::vector<int32_t> tg(R);
  for (int i = 0; i < R; ++i) tg[i] = (i * 13) % V;
  auto targets = twin_idx(tg);
  const double lc = cpu->cross_entropy(logits.c, losses.c, targets.c, R, V, 0.01f);
  const double lg = gpu->cross_entropy(logits.g, losses.g, targets.g, R, V, 0.01f);
  EXPECT_NEAR(lc, lg, 1e-5 * std::fabs(lc));
  expect_same(logits, "dlogits");
  expect_same(losses, "losses");

  auto in = twin(random(R * d, 16)), out = twin(random(R * d, 17));
  std::vector<int32_t> idx(R), off = {0, 3, 3, 7, 10};
  for (int i = 0; i < R; ++i) idx[i] = (i * 11) % R - (i % 9 == 0 ? R : 0);  // some -1..-R: negatives give zero rows
  for (auto& i : idx) i = i < 0 ? -1 : i;
  auto ix = twin_idx(idx);
  cpu->gather_rows(out.c, in.c, ix.c, R, d);
  gpu->gather_rows(out.g, in.g, ix.g, R, d);
  expect_same(out, "gather_rows");
  auto o = twin_idx(off), rows = twin_idx({4, 1, 9, 2, 2, 0, 5, 8, 8, 3});
  auto sum = twin(random(4 * d, 18));
  for (bool acc : {false, true}) {
    cpu->sum_rows(sum.c, in.c, o.c, rows.c, 4, d, acc);
    gpu->sum_rows(sum.g, in.g, o.g, rows.g, 4, d, acc);
    expect_same(sum, "sum_rows");
  }
  const int T = R / K;
  std::vector<int32_t> pair_row(T * K);
  for (int p = 0; p < T * K; ++p) pair_row[p] = p % 7 == 3 ? -1 : (p * 5) % (T * K);  // a permutation, some dropped
  auto pr = twin_idx(pair_row);
  auto y = twin(random(T * K * d, 19)), acc = twin(random(T * d, 21));
  cpu->combine_rows(acc.c, y.c, pr.c, T, K, d);
  gpu->combine_rows(acc.g, y.g, pr.g, T, K, d);
  expect_same(acc, "combine_rows");
  auto dy = twin(random(T * K * d, 20));  // the dropped pairs' rows keep these
  cpu->combine_rows_backward(dy.c, acc.c, pr.c, T, K, d);
  gpu->combine_rows_backward(dy.g, acc.g, pr.g, T, K, d);
  expect_same(dy, "combine dy");
  // one value a pair, as the gates go to their rows (Dispatcher::dispatch_gates)
  auto gate = twin(random(T * K, 26)), row_gate = twin(random(T * K, 27));
  cpu->combine_rows_backward(row_gate.c, gate.c, pr.c, T * K, 1, 1);
  gpu->combine_rows_backward(row_gate.g, gate.g, pr.g, T * K, 1, 1);
  expect_same(row_gate, "gates to rows");

  auto p = twin(random(1000, 22)), g = twin(random(1000, 23)), m = twin(random(1000, 24, 0.1f)),
       v = twin(random(1000, 25, 0.1f));
  std::vector<float> vh = to_host(*cpu, v.c.data(), 1000);
  for (auto& e : vh) e = std::fabs(e);
  to_device(*cpu, v.c.data(), vh);
  to_device(*gpu, v.g.data(), vh);
  cpu->adamw(p.c, g.c, m.c, v.c, 1000, 1e-3, 0.9, 0.95, 1e-8, 0.1, 3, 0.5);
  gpu->adamw(p.g, g.g, m.g, v.g, 1000, 1e-3, 0.9, 0.95, 1e-8, 0.1, 3, 0.5);
  expect_same(p, "adamw param");
  expect_same(m, "adamw m");
  expect_same(v, "adamw v");
  EXPECT_NEAR(cpu->sum_squares(p.c, 1000), gpu->sum_squares(p.g, 1000), 1e-6 * cpu->sum_squares(p.c, 1000));
  cpu->add(p.c, g.c, 1000);
  gpu->add(p.g, g.g, 1000);
  expect_same(p, "add");
  cpu->fill(p.c, 0.25f, 1000);
  gpu->fill(p.g, 0.25f, 1000);
  expect_same(p, "fill");
}

// dsmoe bench --profile's report: ops that state the bytes they move can never have moved them
// faster than the device's memory bandwidth (buffers of 256 MB, far beyond the L2 cache), and the
// floor of each op and of all of them is at most the time they took.
TEST(CudaProfile, NoOpMovesItsBytesFasterThanTheMemoryAllows) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << "no GPU: " << why;
  auto be = make_cuda_backend(0);
  const int64_t n = int64_t{64} << 20;
  testing::internal::CaptureStderr();
  {
    Buf<float> x(*be, n), y(*be, n);
    ASSERT_TRUE(be->start_profile());
    for (int rep = 0; rep < 5; ++rep) {
      be->fill(x.data(), 1.f, n);
      be->copy(y.data(), x.data(), n);
      be->add(y.data(), x.data(), n);
      EXPECT_EQ(be->sum_squares(y.data(), n), 4.0 * n);
    }
  }
  be.reset();  // the report goes to stderr
  const std::string report = testing::internal::GetCapturedStderr();
  std::smatch m;
  ASSERT_TRUE(std::regex_search(report, m, std::regex(R"(floor of the ops that state their work: ([0-9.]+) ms of their ([0-9.]+) ms \(memory ([0-9]+) GB/s)")))
      << report;
  const double floor = std::stod(m[1]), took = std::stod(m[2]), bandwidth = std::stod(m[3]);
  EXPECT_GT(floor, 0) << report;
  EXPECT_LE(floor, took) << report;
  for (const char* op : {"fill", "copy", "add", "sum_squares"}) {
    ASSERT_TRUE(std::regex_search(report, m, std::regex(std::string("\n  ") + op + R"( .* ([0-9]+) GB/s, floor +([0-9.]+) %)")))
        << op << "\n" << report;
    EXPECT_GT(std::stod(m[1]), 0) << op;
    EXPECT_LE(std::stod(m[1]), bandwidth) << op << "\n" << report;
    EXPECT_LE(std::stod(m[2]), 100.0) << op << "\n" << report;
  }
}

}  // namespace
}  // namespace dsmoe
