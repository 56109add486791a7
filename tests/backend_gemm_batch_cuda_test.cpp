// The bf16 backend's batched products (gemm_batch: cuBLASLt, the problems on side-by-side
// streams, those whose outputs meet in batch order): every (trans_a, trans_b), odd shapes (m = 1,
// m = 129, k = 17, many problems of different m), alpha and beta, unaligned leading dimensions,
// ordered outputs, against fp64 products of the bf16-rounded inputs on the host. Skipped where
// no GPU is visible.
// Tolerance: the inputs are the same bf16 values on both sides, so only the GPU's fp32
// accumulation differs: each term is exact in fp32 (8-bit significands), the sum's rounding error
// is at most about k 2^-24 sum |a||b| (typically sqrt(k) times that unit); 1e-5 sum |a||b| + 1e-6.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "backend/cuda_loader.h"
#include "util/bf16.h"
#include "util/rng.h"

namespace dsmoe {
namespace {

using Vec = std::vector<float>;

Vec random_bf16(size_t n, uint64_t seed) {  // normal values, already bf16 (rounding to nearest even)
  Rng r(seed);
  Vec v(n);
  for (float& x : v) x = bf16_value(bf16_bits(static_cast<float>(r.normal())));
  return v;
}

int64_t round8(int64_t x) { return (x + 7) / 8 * 8; }

struct Problem {
  int m, n, k;
  float alpha, beta;
  bool same_c = false;  // writes the previous problem's C (after it: the batch is ordered there)
  int pad = 8;          // leading dimensions beyond the stored rows' width (8: aligned for the kernel)
  int cpad = 3;         // C's leading dimension beyond n (odd or even: scalar or paired stores)
};

class CudaVsCpuGemmBatch : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda_available(&why)) GTEST_SKIP() << "no GPU: " << why;
    gpu = make_cuda_backend(0, /*bf16=*/true);
  }

  void check(const std::vector<Problem>& ps, bool ta, bool tb) {
    SCOPED_TRACE(testing::Message() << "trans_a " << ta << " trans_b " << tb);
    check_on(*gpu, ps, ta, tb);
  }
  // Runs the problems as one batch with layout (ta, tb), each operand in a region of its own at a
  // multiple of 8 elements, and compares every element of C (untouched ones too).
  void check_on(Backend<float>& gpu, const std::vector<Problem>& ps, bool ta, bool tb) {
    std::vector<GemmArgs<float>> args;  // pointers set below
    struct Offsets {
      int64_t a, b, c;
    };
    std::vector<Offsets> at;  // of each problem's operands in the buffers
    int64_t na = 0, nb = 0, nc = 0;
    for (const Problem& p : ps) {
      GemmArgs<float> g{ta, tb, p.m, p.n, p.k, p.alpha, nullptr, (ta ? p.m : p.k) + p.pad, nullptr,
                        (tb ? p.k : p.n) + p.pad, p.beta, nullptr, p.n + p.cpad};
      Offsets o{na, nb, nc};
      na = round8(na + (int64_t)(ta ? p.k : p.m) * g.lda);
      nb = round8(nb + (int64_t)(tb ? p.n : p.k) * g.ldb);
      if (p.same_c) {
        o.c = at.back().c;
        g.ldc = args.back().ldc;
      } else {
        nc = round8(nc + (int64_t)p.m * g.ldc);
      }
      args.push_back(g);
      at.push_back(o);
    }
    const Vec a = random_bf16(na, 1), b = random_bf16(nb, 2), c0 = random_bf16(nc, 3);
    Buf<float> ag(gpu, na), bg(gpu, nb), cg(gpu, nc);
    to_device(gpu, ag.data(), a);
    to_device(gpu, bg.data(), b);
    to_device(gpu, cg.data(), c0);
    std::vector<GemmArgs<float>> dev = args;
    for (size_t i = 0; i < dev.size(); ++i) {
      dev[i].a = ag.data() + at[i].a;
      dev[i].b = bg.data() + at[i].b;
      dev[i].c = cg.data() + at[i].c;
    }
    gpu.gemm_batch(dev);
    const Vec got = to_host(gpu, cg.data(), nc);

    std::vector<double> want(c0.begin(), c0.end()), bound(nc, 0.0);  // in batch order
    for (size_t p = 0; p < args.size(); ++p) {
      const GemmArgs<float>& g = args[p];
      const float *A = a.data() + at[p].a, *B = b.data() + at[p].b;
      const int64_t c = at[p].c;
      for (int i = 0; i < g.m; ++i)
        for (int j = 0; j < g.n; ++j) {
          double sum = 0, abs = 0;
          for (int l = 0; l < g.k; ++l) {
            const double x = ta ? A[(int64_t)l * g.lda + i] : A[(int64_t)i * g.lda + l];
            const double y = tb ? B[(int64_t)j * g.ldb + l] : B[(int64_t)l * g.ldb + j];
            sum += x * y;
            abs += std::fabs(x * y);
          }
          double& w = want[c + (int64_t)i * g.ldc + j];
          bound[c + (int64_t)i * g.ldc + j] += std::fabs(g.alpha) * abs + std::fabs(g.beta * w);
          w = g.alpha * sum + g.beta * w;
        }
    }
    for (int64_t i = 0; i < nc; ++i)
      ASSERT_NEAR(got[i], want[i], 1e-5 * bound[i] + 1e-6) << "C element " << i;
  }
  std::unique_ptr<Backend<float>> gpu;
};

TEST_F(CudaVsCpuGemmBatch, OddShapesInEveryLayout) {
  std::vector<Problem> ps = {
      {1, 64, 64, 1.f, 0.f},     {129, 64, 17, 1.f, 0.f},   {129, 129, 33, 0.5f, 1.f}, {7, 130, 40, 1.f, 1.f},
      {64, 1, 9, 1.f, 0.f},      {300, 200, 100, 1.f, 0.f}, {131, 257, 31, -2.f, 0.5f}};
  for (int i = 0; i < 12; ++i) ps.push_back({(i * 37) % 211 + 1, 64, 64, 1.f, 0.f});
  for (bool ta : {false, true})
    for (bool tb : {false, true}) check(ps, ta, tb);
}

// A batch where one product writes an output and the next adds to it (they run on one stream, in
// order), and a product whose leading dimensions are not multiples of 8.
TEST_F(CudaVsCpuGemmBatch, OrderedOutputsAndMisalignedProblemsInOneBatch) {
  const std::vector<Problem> ps = {{150, 96, 48, 1.f, 0.f},       {150, 96, 48, 1.f, 1.f, /*same_c=*/true},
                                   {33, 40, 24, 1.f, 0.f},        {33, 40, 24, 0.5f, 1.f, /*same_c=*/true},
                                   {70, 50, 21, 1.f, 0.f, false, 3}, {200, 128, 64, 1.f, 1.f}};
  for (bool ta : {false, true})
    for (bool tb : {false, true}) check(ps, ta, tb);
}

// Shapes of gpu_small's experts (d 1024, hidden 512, a few hundred rows each), long k included.
TEST_F(CudaVsCpuGemmBatch, ExpertSizedProblems) {
  const std::vector<Problem> ps = {{260, 512, 1024, 1.f, 0.f}, {1024, 128, 260, 1.f, 1.f}, {77, 256, 512, 1.f, 0.f}};
  check(ps, false, true);
  check(ps, false, false);
  check(ps, true, false);
}

// Tile edges: m = 1 and around 64, 128 and 256, k from 1 to a few hundred and not a multiple of
// 8 or 64, n at 8 and around 128 and 256, even and odd ldc, beta = 1.
TEST_F(CudaVsCpuGemmBatch, TileEdges) {
  std::vector<Problem> ps = {
      {1, 8, 1, 1.f, 0.f},          {2, 129, 7, 1.f, 1.f},          {63, 127, 63, 1.f, 0.f},
      {65, 256, 65, 0.5f, 1.f},     {127, 255, 127, 1.f, 0.f},      {129, 257, 129, 1.f, 0.f},
      {255, 300, 200, -1.f, 1.f},   {257, 8, 64, 1.f, 0.f},         {256, 256, 192, 1.f, 0.f, false, 8, 0},
      {256, 256, 100, 1.f, 1.f, false, 8, 0}, {384, 512, 333, 1.f, 0.f, false, 16, 0},
      {1, 512, 1000, 1.f, 1.f, false, 8, 0},  {500, 136, 9, 2.f, 0.5f, false, 8, 0}};
  for (bool ta : {false, true})
    for (bool tb : {false, true}) check(ps, ta, tb);
}

}  // namespace
}  // namespace dsmoe
