// bf16 storage on the CPU backend (make_cpu_backend(true)): each op on operands stored in bf16
// equals the same op in fp32 on the stored (rounded) values, with what it writes rounded to
// nearest even; elements an op does not write (the gaps of a strided product, the rows of a
// scatter it does not reach) keep their stored values. Both sides compute in fp32 with the same
// code, so every comparison is exact.
#include <gtest/gtest.h>

#include <vector>

#include "backend/cpu_backend.h"
#include "util/bf16.h"
#include "util/rng.h"

namespace dsmoe {
namespace {

using Vec = std::vector<float>;

Vec random(size_t n, uint64_t seed) {
  Rng r(seed);
  Vec v(n);
  for (auto& x : v) x = static_cast<float>(r.normal());
  return v;
}
Vec rounded(Vec v) {
  for (float& x : v) x = bf16_value(bf16_bits(x));
  return v;
}

class Bf16Storage : public ::testing::Test {
 protected:
  // A buffer of the bf16 backend holding v (rounded), and its values.
  struct Stored {
    Buf<uint16_t> b;
    Ptr<float> p() { return Ptr<float>::bf16(b.data()); }
  };
  Stored stored(const Vec& v) {
    Stored s{Buf<uint16_t>(*low, std::max<size_t>(1, v.size()))};
    for (size_t i = 0; i < v.size(); ++i) s.b.data()[i] = bf16_bits(v[i]);
    return s;
  }
  static Vec values(Stored& s, size_t n) {
    Vec v(n);
    for (size_t i = 0; i < n; ++i) v[i] = bf16_value(s.b.data()[i]);
    return v;
  }
  std::unique_ptr<Backend<float>> low = make_cpu_backend<float>(true), ref = make_cpu_backend<float>();
};

TEST_F(Bf16Storage, TheBackendSaysSo) {
  EXPECT_TRUE(low->bf16_storage());
  EXPECT_FALSE(ref->bf16_storage());
  ActBuf<float> a, b;
  a.ensure(*low, 10);
  b.ensure(*ref, 10);
  EXPECT_TRUE(a.ptr().is_bf16());
  EXPECT_EQ(a.ptr().element_bytes(), 2u);
  EXPECT_FALSE(b.ptr().is_bf16());
  EXPECT_EQ(static_cast<const char*>((a.ptr() + 3).raw()) - static_cast<const char*>(a.ptr().raw()), 6);
  EXPECT_EQ(static_cast<const char*>((b.ptr() + 3).raw()) - static_cast<const char*>(b.ptr().raw()), 12);
}

TEST_F(Bf16Storage, ProductWithStridedOperandsAndAccumulatedOutput) {
  // C [5, 4] (ldc 6: two untouched columns a row) = 0.5 A [5, 7] B^T + C, A (lda 9) and C in bf16.
  const int m = 5, n = 4, k = 7, lda = 9, ldc = 6;
  const Vec a = rounded(random(m * lda, 1)), b = random(n * k, 2), c0 = rounded(random(m * ldc, 3));
  Stored as = stored(a), cs = stored(c0);
  low->gemm({false, true, m, n, k, 0.5f, as.p(), lda, b.data(), k, 1.f, cs.p(), ldc});
  Vec want = c0;
  ref->gemm({false, true, m, n, k, 0.5f, a.data(), lda, b.data(), k, 1.f, want.data(), ldc});
  EXPECT_EQ(values(cs, m * ldc), rounded(want));
}

TEST_F(Bf16Storage, SwigluNormsGathersAndCombines) {
  const int R = 9, n = 5, d = 6, K = 2, T = 4;
  const Vec gu = rounded(random(R * 2 * n, 4)), dact = random(R * n, 5), scale = random(R, 14);
  Stored gs = stored(gu), act = stored(Vec(R * n)), dgu = stored(Vec(R * 2 * n));
  low->swiglu_forward(act.p(), gs.p(), scale.data(), R, n);
  Vec dscale(R), dscale_ref(R);
  low->swiglu_backward(dgu.p(), dscale.data(), dact.data(), gs.p(), scale.data(), R, n);
  Vec act_ref(R * n), dgu_ref(R * 2 * n);
  ref->swiglu_forward(act_ref.data(), gu.data(), scale.data(), R, n);
  ref->swiglu_backward(dgu_ref.data(), dscale_ref.data(), dact.data(), gu.data(), scale.data(), R, n);
  EXPECT_EQ(values(act, R * n), rounded(act_ref));
  EXPECT_EQ(values(dgu, R * 2 * n), rounded(dgu_ref));
  EXPECT_EQ(dscale, dscale_ref);

  const Vec x = random(R * d, 6), nw = random(d, 11);
  Stored normed = stored(Vec(R * d));
  Vec rstd(R), rstd_ref(R), normed_ref(R * d);
  low->rmsnorm_forward(normed.p(), rstd.data(), x.data(), nw.data(), R, d, 1e-6);
  ref->rmsnorm_forward(normed_ref.data(), rstd_ref.data(), x.data(), nw.data(), R, d, 1e-6);
  EXPECT_EQ(values(normed, R * d), rounded(normed_ref));
  EXPECT_EQ(rstd, rstd_ref);

  const std::vector<int32_t> idx = {3, -1, 0, 8, 3, 2};
  Stored out = stored(Vec(6 * d)), again = stored(Vec(6 * d));
  low->gather_rows(out.p(), x.data(), idx.data(), 6, d);       // fp32 -> bf16
  Stored xs = stored(x);
  low->gather_rows(again.p(), xs.p(), idx.data(), 6, d);       // bf16 -> bf16
  Vec gathered(6 * d);
  ref->gather_rows(gathered.data(), x.data(), idx.data(), 6, d);
  EXPECT_EQ(values(out, 6 * d), rounded(gathered));
  EXPECT_EQ(values(again, 6 * d), rounded(gathered));

  // Pairs of T tokens reading rows of y [R, d]; row 7 is no pair's and keeps its value in dy.
  const std::vector<int32_t> pair_row = {0, 5, -1, 2, 4, 1, 6, 3};
  const Vec y = rounded(random(R * d, 7)), acc0 = random(T * d, 9), dy0 = rounded(random(R * d, 10));
  Stored ys = stored(y), dys = stored(dy0);
  Vec acc = acc0, acc_ref = acc0, dy_ref = dy0;
  low->combine_rows(acc.data(), ys.p(), pair_row.data(), T, K, d);
  ref->combine_rows(acc_ref.data(), y.data(), pair_row.data(), T, K, d);
  EXPECT_EQ(acc, acc_ref);
  low->combine_rows_backward(dys.p(), acc.data(), pair_row.data(), T, K, d);
  ref->combine_rows_backward(dy_ref.data(), acc.data(), pair_row.data(), T, K, d);
  EXPECT_EQ(values(dys, R * d), rounded(dy_ref));
}

TEST_F(Bf16Storage, RopeAndAttention) {
  const int B = 2, T = 5, H = 2, hd = 4, d = H * hd, R = B * T;
  const Vec qkv0 = rounded(random(R * 3 * d, 12)), dout = random(R * d, 13);
  Stored qs = stored(qkv0);
  Vec qkv = qkv0;
  low->rope(qs.p(), B, T, H, hd, 10000.0, false, 0);
  ref->rope(qkv.data(), B, T, H, hd, 10000.0, false, 0);
  EXPECT_EQ(values(qs, R * 3 * d), rounded(qkv));

  qkv = values(qs, R * 3 * d);
  const int64_t saved = low->attention_saved_size(B, T, H), scratch = low->attention_scratch_size(B, T, H);
  Vec probs(saved), probs_ref(saved), sc(scratch), out_ref(R * d), dqkv_ref(R * 3 * d, 7.f);
  Stored out = stored(Vec(R * d)), dqkv = stored(Vec(R * 3 * d, 7.f));
  low->attention_forward(out.p(), probs.data(), qs.p(), B, T, H, hd);
  ref->attention_forward(out_ref.data(), probs_ref.data(), qkv.data(), B, T, H, hd);
  EXPECT_EQ(values(out, R * d), rounded(out_ref));
  EXPECT_EQ(probs, probs_ref);
  low->attention_backward(dqkv.p(), sc.data(), dout.data(), qs.p(), out.p(), probs.data(), B, T, H, hd);
  ref->attention_backward(dqkv_ref.data(), sc.data(), dout.data(), qkv.data(), out_ref.data(), probs_ref.data(), B,
                          T, H, hd);
  EXPECT_EQ(values(dqkv, R * 3 * d), rounded(dqkv_ref));
}

}  // namespace
}  // namespace dsmoe
