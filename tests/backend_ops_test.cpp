// Every op of the CPU backend in double precision: forwards against direct formulas or hand values,
// backwards against central finite differences of L = sum(w ⊙ op(x)) for a fixed random w.
//
// Finite-difference tolerance. With h = 1e-6 the central difference (L(x+h e_i) - L(x-h e_i)) / 2h
// has a truncation error h^2/6 * |d^3 L| ~ 1e-13 for the O(1) inputs used here, and a rounding
// error of about eps_mach * |L| / h ~ 1e-16 * 10 / 1e-6 = 1e-9 (L is a sum of a few dozen O(1)
// terms). Both are far below the tolerance 1e-7 + 1e-6 * |fd|, while a wrong term in a backward
// (a missing factor, a sign, a transposed index) is O(1) off and fails by many orders of magnitude.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "backend/cpu_backend.h"
#include "util/rng.h"

namespace dsmoe {
namespace {

using Vec = std::vector<double>;
constexpr double kH = 1e-6;

Vec random_vec(Rng& rng, size_t n, double scale = 1.0) {
  Vec v(n);
  for (auto& x : v) x = scale * rng.normal();
  return v;
}

double dot(const Vec& a, const Vec& b) {
  EXPECT_EQ(a.size(), b.size());
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Central differences of a scalar function of x, in every coordinate.
Vec fd_grad(const std::function<double(const Vec&)>& loss, Vec x) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + kH;
    const double lp = loss(x);
    x[i] = keep - kH;
    const double lm = loss(x);
    x[i] = keep;
    g[i] = (lp - lm) / (2 * kH);
  }
  return g;
}

void expect_grad_near(const Vec& analytic, const Vec& fd, const std::string& what) {
  ASSERT_EQ(analytic.size(), fd.size()) << what;
  for (size_t i = 0; i < fd.size(); ++i)
    EXPECT_NEAR(analytic[i], fd[i], 1e-7 + 1e-6 * std::fabs(fd[i])) << what << " element " << i;
}

class BackendOps : public ::testing::Test {
 protected:
  std::unique_ptr<Backend<double>> be = make_cpu_backend<double>();

  Buf<double> dev(const Vec& v) {
    Buf<double> b(*be, static_cast<int64_t>(v.size()));
    to_device(*be, b.data(), v);
    return b;
  }
  Buf<int32_t> dev_idx(const std::vector<int32_t>& v) {
    Buf<int32_t> b(*be, static_cast<int64_t>(v.size()));
    to_device(*be, b.data(), v);
    return b;
  }
  Vec host(const Buf<double>& b) { return to_host(*be, b.data(), b.size()); }
};

// ---------------------------------------------------------------- elementwise, sum_squares

TEST_F(BackendOps, FillCopyAdd) {
  const int n = 37;
  Buf<double> a(*be, n), b(*be, n);
  be->fill(a, 2.5, n);
  for (double x : host(a)) EXPECT_EQ(x, 2.5);
  Rng rng(1);
  Vec v = random_vec(rng, n);
  auto bv = dev(v);
  be->copy(b, bv, n);
  EXPECT_EQ(host(b), v);
  be->add(b, a, n);
  Vec got = host(b);
  for (int i = 0; i < n; ++i) EXPECT_EQ(got[i], v[i] + 2.5);
}

TEST_F(BackendOps, SumSquares) {
  // x_i = i / 2: every partial sum is a multiple of 1/4 below 2^53, so the sum is exact in double.
  const int n = 1001;
  Vec v(n);
  for (int i = 0; i < n; ++i) v[i] = 0.5 * i;
  auto x = dev(v);
  const double expect = 0.25 * (1000.0 * 1001.0 * 2001.0 / 6.0);
  EXPECT_EQ(be->sum_squares(x, n), expect);
  EXPECT_EQ(be->sum_squares(x, 0), 0.0);
  EXPECT_EQ(be->sum_squares(x.data() + 3, 1), 2.25);
  Vec w = {3.0, -4.0};
  auto y = dev(w);
  EXPECT_EQ(be->sum_squares(y, 2), 25.0);
}

// ---------------------------------------------------------------- rmsnorm

TEST_F(BackendOps, RmsnormForwardMatchesFormula) {
  const int R = 3, d = 5;
  const double eps = 0.1;  // large enough that leaving eps out would show
  Rng rng(2);
  Vec x = random_vec(rng, R * d), w = random_vec(rng, d);
  auto xb = dev(x), wb = dev(w);
  Buf<double> out(*be, R * d), rstd(*be, R);
  be->rmsnorm_forward(out, rstd, xb, wb, R, d, eps);
  Vec o = host(out), rs = host(rstd);
  for (int r = 0; r < R; ++r) {
    double ms = 0;
    for (int j = 0; j < d; ++j) ms += x[r * d + j] * x[r * d + j] / d;
    const double s = 1.0 / std::sqrt(ms + eps);
    EXPECT_NEAR(rs[r], s, 1e-14);
    for (int j = 0; j < d; ++j) EXPECT_NEAR(o[r * d + j], x[r * d + j] * s * w[j], 1e-14);
  }
}

TEST_F(BackendOps, RmsnormBackwardMatchesFiniteDifferences) {
  const int R = 3, d = 5;
  const double eps = 1e-2;
  Rng rng(3);
  Vec x = random_vec(rng, R * d), w = random_vec(rng, d), dout = random_vec(rng, R * d);
  auto loss = [&](const Vec& xv, const Vec& wv) {
    auto xb = dev(xv), wb = dev(wv);
    Buf<double> out(*be, R * d), rstd(*be, R);
    be->rmsnorm_forward(out, rstd, xb, wb, R, d, eps);
    return dot(dout, host(out));
  };
  auto xb = dev(x), wb = dev(w), gb = dev(dout);
  Buf<double> out(*be, R * d), rstd(*be, R), dx(*be, R * d), dw(*be, d);  // zero-initialized
  be->rmsnorm_forward(out, rstd, xb, wb, R, d, eps);
  be->rmsnorm_backward(dx, dw, gb, xb, wb, rstd, R, d);
  Vec gx = host(dx), gw = host(dw);
  expect_grad_near(gx, fd_grad([&](const Vec& v) { return loss(v, w); }, x), "rmsnorm dx");
  expect_grad_near(gw, fd_grad([&](const Vec& v) { return loss(x, v); }, w), "rmsnorm dw");

  // It accumulates: a second call adds the same gradients again.
  be->rmsnorm_backward(dx, dw, gb, xb, wb, rstd, R, d);
  Vec gx2 = host(dx), gw2 = host(dw);
  for (size_t i = 0; i < gx.size(); ++i) EXPECT_NEAR(gx2[i], 2 * gx[i], 1e-14 * (1 + std::fabs(gx[i])));
  for (size_t i = 0; i < gw.size(); ++i) EXPECT_NEAR(gw2[i], 2 * gw[i], 1e-14 * (1 + std::fabs(gw[i])));
}

// ---------------------------------------------------------------- rope

TEST_F(BackendOps, RopeHandValues) {
  // batch 1, seq 2, one head of dim 2, theta 10000: freq_0 = 1, so position 1 rotates by 1 rad.
  const Vec x = {0.3, -1.7, 0.9, 2.2, 5.0, 6.0,    // pos 0: q | k | v
                 1.25, -0.5, -2.0, 0.75, 7.0, 8.0};  // pos 1
  auto qkv = dev(x);
  be->rope(qkv, 1, 2, 1, 2, 10000.0, false, 0);
  Vec y = host(qkv);
  for (int j = 0; j < 6; ++j) EXPECT_DOUBLE_EQ(y[j], x[j]) << "position 0 is the identity";
  const double c = std::cos(1.0), s = std::sin(1.0);
  EXPECT_NEAR(y[6], 1.25 * c - (-0.5) * s, 1e-15);
  EXPECT_NEAR(y[7], -0.5 * c + 1.25 * s, 1e-15);
  EXPECT_NEAR(y[8], -2.0 * c - 0.75 * s, 1e-15);
  EXPECT_NEAR(y[9], 0.75 * c + (-2.0) * s, 1e-15);
  EXPECT_EQ(y[10], 7.0);
  EXPECT_EQ(y[11], 8.0);

  // With two sequences the position restarts: sequence 1's rows get the same rotation.
  Vec two = x;
  two.insert(two.end(), x.begin(), x.end());
  auto tb = dev(two);
  be->rope(tb, 2, 2, 1, 2, 10000.0, false, 0);
  Vec tr = host(tb);
  for (int j = 0; j < 12; ++j) EXPECT_EQ(tr[12 + j], y[j]) << "sequence 1, element " << j;

  // head_dim 4, position 2: pairs (0, 2) at freq 1, (1, 3) at freq 10000^(-2/4) = 0.01.
  Vec z(3 * 12, 0.0);
  const int row = 2 * 12;  // position 2, q part
  z[row + 0] = 1.0;
  z[row + 1] = 2.0;
  z[row + 2] = 3.0;
  z[row + 3] = 4.0;
  auto zb = dev(z);
  be->rope(zb, 1, 3, 1, 4, 10000.0, false, 0);
  Vec zr = host(zb);
  const double a0 = 2.0, a1 = 2.0 * 0.01;
  EXPECT_NEAR(zr[row + 0], 1.0 * std::cos(a0) - 3.0 * std::sin(a0), 1e-15);
  EXPECT_NEAR(zr[row + 2], 3.0 * std::cos(a0) + 1.0 * std::sin(a0), 1e-15);
  EXPECT_NEAR(zr[row + 1], 2.0 * std::cos(a1) - 4.0 * std::sin(a1), 1e-15);
  EXPECT_NEAR(zr[row + 3], 4.0 * std::cos(a1) + 2.0 * std::sin(a1), 1e-15);
}

TEST_F(BackendOps, RopeInverseIsTransposeAndInverse) {
  const int B = 2, T = 5, H = 2, hd = 4, d = H * hd;
  const double theta = 500.0;
  Rng rng(4);
  Vec x = random_vec(rng, B * T * 3 * d), w = random_vec(rng, B * T * 3 * d);
  auto rope_of = [&](const Vec& v, bool inverse) {
    auto b = dev(v);
    be->rope(b, B, T, H, hd, theta, inverse, 0);
    return host(b);
  };
  Vec rx = rope_of(x, false), riw = rope_of(w, true);
  // <w, R x> = <R^T w, x>, with the inverse rotation as R^T.
  EXPECT_NEAR(dot(w, rx), dot(riw, x), 1e-12);
  // R^-1 R x = x, and v is untouched.
  Vec back = rope_of(rx, true);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(back[i], x[i], 1e-14);
  for (int r = 0; r < B * T; ++r)
    for (int j = 2 * d; j < 3 * d; ++j) EXPECT_EQ(rx[r * 3 * d + j], x[r * 3 * d + j]);
  // Rotations keep each (i, i + hd/2) pair's norm.
  for (int r = 0; r < B * T; ++r)
    for (int part = 0; part < 2; ++part)
      for (int h = 0; h < H; ++h)
        for (int i = 0; i < hd / 2; ++i) {
          int a = r * 3 * d + part * d + h * hd + i, b = a + hd / 2;
          EXPECT_NEAR(rx[a] * rx[a] + rx[b] * rx[b], x[a] * x[a] + x[b] * x[b], 1e-13);
        }
}

TEST_F(BackendOps, RopeBackwardMatchesFiniteDifferences) {
  // The backward (inverse rope of w) is the gradient of <w, rope(x)>.
  const int B = 2, T = 3, H = 1, hd = 4, d = H * hd;
  const double theta = 10000.0;
  Rng rng(14);
  Vec x = random_vec(rng, B * T * 3 * d), w = random_vec(rng, B * T * 3 * d);
  auto rope_of = [&](const Vec& v, bool inverse) {
    auto b = dev(v);
    be->rope(b, B, T, H, hd, theta, inverse, 0);
    return host(b);
  };
  expect_grad_near(rope_of(w, true), fd_grad([&](const Vec& v) { return dot(w, rope_of(v, false)); }, x),
                   "rope");
}

// Rows at positions first.. rotate as the same rows of the whole sequence (a KV cache's new rows).
TEST_F(BackendOps, RopeFromAFirstPositionRotatesAsTheWholeSequence) {
  const int T = 9, H = 2, hd = 4, d = H * hd, first = 6;
  Rng rng(24);
  const Vec x = random_vec(rng, T * 3 * d);
  auto whole = dev(x);
  be->rope(whole, 1, T, H, hd, 500.0, false, 0);
  const Vec want = host(whole);
  for (int n : {1, T - first}) {  // one row, then the rest (the table grows past the first call's)
    auto rows = dev(Vec(x.begin() + first * 3 * d, x.begin() + (first + n) * 3 * d));
    be->rope(rows, 1, n, H, hd, 500.0, false, first);
    const Vec got = host(rows);
    for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], want[first * 3 * d + i]) << n << " rows, element " << i;
  }
}

// ---------------------------------------------------------------- attention

struct AttnShape {
  int B = 2, T = 4, H = 2, hd = 3;
  int d() const { return H * hd; }
};

// Naive causal attention, written from docs/model.md.
Vec naive_attention(const Vec& qkv, const AttnShape& s) {
  const int d = s.d(), ld = 3 * d;
  Vec out((size_t)s.B * s.T * d, 0.0);
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.H; ++h)
      for (int i = 0; i < s.T; ++i) {
        Vec sc(i + 1);
        double mx = -1e300;
        for (int j = 0; j <= i; ++j) {
          double dq = 0;
          for (int c = 0; c < s.hd; ++c)
            dq += qkv[(b * s.T + i) * ld + h * s.hd + c] * qkv[(b * s.T + j) * ld + d + h * s.hd + c];
          sc[j] = dq / std::sqrt(double(s.hd));
          mx = std::max(mx, sc[j]);
        }
        double sum = 0;
        for (auto& v : sc) sum += v = std::exp(v - mx);
        for (int j = 0; j <= i; ++j)
          for (int c = 0; c < s.hd; ++c)
            out[(b * s.T + i) * d + h * s.hd + c] += sc[j] / sum * qkv[(b * s.T + j) * ld + 2 * d + h * s.hd + c];
      }
  return out;
}

TEST_F(BackendOps, AttentionForwardMatchesNaiveAndProbsAreCausal) {
  AttnShape s;
  const int d = s.d();
  Rng rng(5);
  Vec qkv = random_vec(rng, (size_t)s.B * s.T * 3 * d);
  auto qb = dev(qkv);
  Buf<double> out(*be, s.B * s.T * d), probs(*be, s.B * s.H * s.T * s.T);
  be->attention_forward(out, probs, qb, s.B, s.T, s.H, s.hd);
  Vec o = host(out), p = host(probs), ref = naive_attention(qkv, s);
  for (size_t i = 0; i < o.size(); ++i) EXPECT_NEAR(o[i], ref[i], 1e-13);
  for (int bh = 0; bh < s.B * s.H; ++bh)
    for (int i = 0; i < s.T; ++i) {
      double sum = 0;
      for (int j = 0; j < s.T; ++j) {
        double v = p[((size_t)bh * s.T + i) * s.T + j];
        if (j > i)
          EXPECT_EQ(v, 0.0) << "above the diagonal";
        else
          EXPECT_GT(v, 0.0);
        sum += v;
      }
      EXPECT_NEAR(sum, 1.0, 1e-14);
    }
  // Row 0 attends only to itself: out[0] = v[0].
  for (int c = 0; c < d; ++c) EXPECT_NEAR(o[c], qkv[2 * d + c], 1e-14);
}

TEST_F(BackendOps, AttentionIsCausalAndBatchesAreIndependent) {
  AttnShape s;
  const int d = s.d(), ld = 3 * d;
  Rng rng(6);
  Vec qkv = random_vec(rng, (size_t)s.B * s.T * 3 * d);
  auto run = [&](const Vec& v) {
    auto qb = dev(v);
    Buf<double> out(*be, s.B * s.T * d), probs(*be, s.B * s.H * s.T * s.T);
    be->attention_forward(out, probs, qb, s.B, s.T, s.H, s.hd);
    return host(out);
  };
  Vec base = run(qkv);
  // Change k and v (all heads) of token 2 of sequence 0.
  Vec changed = qkv;
  for (int j = d; j < 3 * d; ++j) changed[2 * ld + j] += 1.5;
  Vec o = run(changed);
  for (int i = 0; i < 2; ++i)
    for (int c = 0; c < d; ++c) EXPECT_EQ(o[i * d + c], base[i * d + c]) << "earlier row " << i;
  double diff = 0;
  for (int i = 2; i < s.T; ++i)
    for (int c = 0; c < d; ++c) diff += std::fabs(o[i * d + c] - base[i * d + c]);
  EXPECT_GT(diff, 1e-3) << "later rows must see the change";
  for (int i = s.T; i < s.B * s.T; ++i)
    for (int c = 0; c < d; ++c) EXPECT_EQ(o[i * d + c], base[i * d + c]) << "other sequence, row " << i;
}

// A KV cache's queries: rows first..first+n-1 of the sequence's attention, from its first + n rows.
TEST_F(BackendOps, AttentionQueriesAreTheForwardsRows) {
  AttnShape s;
  s.B = 1;
  s.T = 7;
  const int d = s.d();
  Rng rng(8);
  const Vec qkv = random_vec(rng, (size_t)s.T * 3 * d);
  const Vec want = naive_attention(qkv, s);
  for (auto [first, n] : {std::pair{0, 7}, {3, 4}, {6, 1}, {2, 1}}) {
    auto qb = dev(Vec(qkv.begin(), qkv.begin() + (first + n) * 3 * d));
    Buf<double> out(*be, n * d);
    be->attention_queries(out, qb, first, n, s.H, s.hd);
    const Vec got = host(out);
    for (int i = 0; i < n * d; ++i) EXPECT_NEAR(got[i], want[first * d + i], 1e-13) << first << "+" << n << ", " << i;
  }
}

TEST_F(BackendOps, AttentionBackwardMatchesFiniteDifferences) {
  AttnShape s;
  const int d = s.d(), ld = 3 * d, R = s.B * s.T;
  Rng rng(7);
  Vec qkv = random_vec(rng, (size_t)R * ld), w = random_vec(rng, (size_t)R * d);
  auto loss = [&](const Vec& v) {
    auto qb = dev(v);
    Buf<double> out(*be, R * d), probs(*be, s.B * s.H * s.T * s.T);
    be->attention_forward(out, probs, qb, s.B, s.T, s.H, s.hd);
    return dot(w, host(out));
  };
  auto qb = dev(qkv), wb = dev(w);
  Buf<double> out(*be, R * d), probs(*be, s.B * s.H * s.T * s.T),
      scratch(*be, be->attention_scratch_size(s.B, s.T, s.H));
  be->attention_forward(out, probs, qb, s.B, s.T, s.H, s.hd);
  auto dqkv = dev(Vec((size_t)R * ld, 7.0));  // garbage: dqkv is written, not accumulated
  be->attention_backward(dqkv, scratch, wb, qb, out, probs, s.B, s.T, s.H, s.hd);
  Vec g = host(dqkv), fd = fd_grad(loss, qkv);
  for (int part = 0; part < 3; ++part) {
    Vec ga, fa;
    for (int r = 0; r < R; ++r)
      for (int j = part * d; j < (part + 1) * d; ++j) {
        ga.push_back(g[r * ld + j]);
        fa.push_back(fd[r * ld + j]);
      }
    expect_grad_near(ga, fa, std::string("attention d") + "qkv"[part]);
  }
  // The first token's q gets no gradient: row 0's softmax is over a single entry.
  for (int c = 0; c < d; ++c) EXPECT_NEAR(g[c], 0.0, 1e-15);
}

// ---------------------------------------------------------------- swiglu

TEST_F(BackendOps, SwigluForwardAndBackward) {
  const int R = 3, n = 4;
  Rng rng(8);
  Vec gu = random_vec(rng, R * 2 * n, 1.5), w = random_vec(rng, R * n), scale = random_vec(rng, R);
  // With a row scale (the routed experts' gates) and without.
  auto fwd = [&](const Vec& v, const Vec* s) {
    auto b = dev(v), sb = dev(s ? *s : Vec(R));
    Buf<double> act(*be, R * n);
    be->swiglu_forward(act, b, s ? sb.data() : nullptr, R, n);
    return host(act);
  };
  const Vec a = fwd(gu, nullptr), as = fwd(gu, &scale);
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < n; ++j) {
      double g = gu[r * 2 * n + j], u = gu[r * 2 * n + n + j];
      EXPECT_NEAR(a[r * n + j], g / (1 + std::exp(-g)) * u, 1e-15);
      EXPECT_NEAR(as[r * n + j], scale[r] * g / (1 + std::exp(-g)) * u, 1e-15);
    }
  auto gb = dev(gu), wb = dev(w), sb = dev(scale);
  auto dgu = dev(Vec(R * 2 * n, -3.0));  // written, not accumulated
  auto dscale = dev(Vec(R, -3.0));
  be->swiglu_backward(dgu, nullptr, wb, gb, nullptr, R, n);
  expect_grad_near(host(dgu), fd_grad([&](const Vec& v) { return dot(w, fwd(v, nullptr)); }, gu), "swiglu");
  be->swiglu_backward(dgu, dscale, wb, gb, sb, R, n);
  expect_grad_near(host(dgu), fd_grad([&](const Vec& v) { return dot(w, fwd(v, &scale)); }, gu), "scaled swiglu");
  expect_grad_near(host(dscale), fd_grad([&](const Vec& v) { return dot(w, fwd(gu, &v)); }, scale), "swiglu scale");
}

// ---------------------------------------------------------------- cross entropy

TEST_F(BackendOps, CrossEntropyHandValue) {
  // logits [1, 2, 3], target 0: log(e + e^2 + e^3) - 1 = 2.40760596444438...
  auto lg = dev({1.0, 2.0, 3.0});
  auto tg = dev_idx({0});
  Buf<double> losses(*be, 1);
  double total = be->cross_entropy(lg, losses, tg, 1, 3, 1.0);
  EXPECT_NEAR(total, 2.40760596444438, 1e-13);
  EXPECT_NEAR(total, std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 1.0, 1e-14);
  EXPECT_NEAR(host(losses)[0], total, 1e-15);
  // Gradient: softmax - onehot = [e/S - 1, e^2/S, e^3/S], S = e + e^2 + e^3.
  const double S = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  Vec g = host(lg);
  EXPECT_NEAR(g[0], std::exp(1.0) / S - 1.0, 1e-15);
  EXPECT_NEAR(g[1], std::exp(2.0) / S, 1e-15);
  EXPECT_NEAR(g[2], std::exp(3.0) / S, 1e-15);
}

TEST_F(BackendOps, CrossEntropyGradientMatchesFiniteDifferences) {
  const int R = 4, V = 5;
  const double scale = 0.37;
  Rng rng(9);
  Vec logits = random_vec(rng, R * V, 2.0);
  logits[7] = 40.0;  // a large logit: the max-shift must keep it finite
  std::vector<int32_t> targets = {3, 0, 4, 3};
  auto tg = dev_idx(targets);
  auto loss = [&](const Vec& v) {
    auto lb = dev(v);
    Buf<double> losses(*be, R);
    return scale * be->cross_entropy(lb, losses, tg, R, V, scale);
  };
  auto lb = dev(logits);
  Buf<double> losses(*be, R);
  double total = be->cross_entropy(lb, losses, tg, R, V, scale);
  Vec ls = host(losses);
  double sum = 0;
  for (int r = 0; r < R; ++r) {
    double lse = 0, mx = -1e300;
    for (int j = 0; j < V; ++j) mx = std::max(mx, logits[r * V + j]);
    for (int j = 0; j < V; ++j) lse += std::exp(logits[r * V + j] - mx);
    lse = std::log(lse) + mx;
    EXPECT_NEAR(ls[r], lse - logits[r * V + targets[r]], 1e-13);
    sum += ls[r];
  }
  EXPECT_NEAR(total, sum, 1e-13);
  Vec g = host(lb);
  expect_grad_near(g, fd_grad(loss, logits), "cross_entropy");
  for (int r = 0; r < R; ++r) {  // each row of softmax - onehot sums to 0
    double rs = 0;
    for (int j = 0; j < V; ++j) rs += g[r * V + j];
    EXPECT_NEAR(rs, 0.0, 1e-15);
  }
}

// ---------------------------------------------------------------- embedding, gather, weighted sums

TEST_F(BackendOps, EmbeddingForwardAndAccumulatingBackward) {
  const int V = 5, d = 3, R = 6;
  Rng rng(10);
  Vec table = random_vec(rng, V * d), w = random_vec(rng, R * d), init = random_vec(rng, V * d);
  std::vector<int32_t> tokens = {2, 0, 2, 4, 2, 0};  // 2 three times, 0 twice, 1 and 3 never
  auto tk = dev_idx(tokens);
  auto fwd = [&](const Vec& t) {
    auto tb = dev(t);
    Buf<double> out(*be, R * d);
    be->embedding_forward(out, tk, tb, R, d);
    return host(out);
  };
  Vec out = fwd(table);
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < d; ++j) EXPECT_EQ(out[r * d + j], table[tokens[r] * d + j]);

  auto wb = dev(w);
  auto dtab = dev(init);  // backward accumulates into what is there
  be->embedding_backward(dtab, tk, wb, R, d, V);
  Vec got = host(dtab), grad(V * d);
  for (int i = 0; i < V * d; ++i) grad[i] = got[i] - init[i];
  expect_grad_near(grad, fd_grad([&](const Vec& t) { return dot(w, fwd(t)); }, table), "embedding");
  for (int j = 0; j < d; ++j) {
    EXPECT_NEAR(got[2 * d + j], init[2 * d + j] + w[0 * d + j] + w[2 * d + j] + w[4 * d + j], 1e-14);
    EXPECT_NEAR(got[0 * d + j], init[0 * d + j] + w[1 * d + j] + w[5 * d + j], 1e-14);
    EXPECT_EQ(got[1 * d + j], init[1 * d + j]);
    EXPECT_EQ(got[3 * d + j], init[3 * d + j]);
  }
}

TEST_F(BackendOps, GatherRowsWithNegativeIndexGivesZeroRow) {
  const int d = 3;
  Vec in = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};  // 4 rows
  auto ib = dev(in);
  auto idx = dev_idx({2, -1, 0, 2, 3, -1});
  auto out = dev(Vec(6 * d, 99.0));  // garbage everywhere, -1 rows must become 0
  be->gather_rows(out, ib, idx, 6, d);
  const Vec expect = {7, 8, 9, 0, 0, 0, 1, 2, 3, 7, 8, 9, 10, 11, 12, 0, 0, 0};
  EXPECT_EQ(host(out), expect);
}

TEST_F(BackendOps, SumRowsOverCsrListsOverwritesOrAccumulates) {
  const int d = 2;
  Vec in = {1, 2, 3, 4, 5, 6, 7, 8};  // 4 rows
  auto ib = dev(in);
  auto off = dev_idx({0, 2, 2, 5});   // out row 0: rows 3, 0; row 1: none; row 2: rows 1, 1, 2
  auto idx = dev_idx({3, 0, 1, 1, 2});
  auto out = dev(Vec(3 * d, 100.0));
  be->sum_rows(out, ib, off, idx, 3, d, false);
  EXPECT_EQ(host(out), Vec({8, 10, 0, 0, 11, 14}));
  be->sum_rows(out, ib, off, idx, 3, d, true);
  EXPECT_EQ(host(out), Vec({16, 20, 0, 0, 22, 28}));
}

TEST_F(BackendOps, CombineRowsAndBackward) {
  // 3 tokens x 2 pairs reading 7 rows in a scrambled order; pair 4 was dropped (row -1), rows 2
  // and 4 belong to no pair.
  const int R = 3, K = 2, d = 4, Y = 7;
  const std::vector<int32_t> pair_row = {5, 0, 6, 3, -1, 1};
  Rng rng(11);
  Vec y = random_vec(rng, Y * d), dout = random_vec(rng, R * d), init = random_vec(rng, R * d);
  auto idx = dev_idx(pair_row);
  auto fwd = [&](const Vec& yv) {
    auto yb = dev(yv);
    auto out = dev(init);  // accumulates
    be->combine_rows(out, yb, idx, R, K, d);
    Vec o = host(out);
    for (int i = 0; i < R * d; ++i) o[i] -= init[i];
    return o;
  };
  Vec o = fwd(y);
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < d; ++j) {
      double e = 0;
      for (int k = 0; k < K; ++k)
        if (pair_row[r * K + k] >= 0) e += y[pair_row[r * K + k] * d + j];
      EXPECT_NEAR(o[r * d + j], e, 1e-14);
    }
  auto gb = dev(dout);
  auto dy = dev(Vec(Y * d, 7.0));
  be->combine_rows_backward(dy, gb, idx, R, K, d);
  Vec want = fd_grad([&](const Vec& v) { return dot(dout, fwd(v)); }, y);
  for (int j = 0; j < d; ++j) want[2 * d + j] = want[4 * d + j] = 7.0;  // rows no pair reads are left as they were
  expect_grad_near(host(dy), want, "combine dy");
}

// ---------------------------------------------------------------- gemm

struct GemmCase {
  bool ta, tb;
};

TEST_F(BackendOps, GemmAllTransposesWithPaddedLeadingDimensions) {
  const int m = 3, n = 4, k = 5;
  const double alpha = 0.7, beta = -0.3;
  Rng rng(12);
  for (GemmCase gc : {GemmCase{false, false}, GemmCase{false, true}, GemmCase{true, false}, GemmCase{true, true}}) {
    SCOPED_TRACE(::testing::Message() << "trans_a=" << gc.ta << " trans_b=" << gc.tb);
    // Stored shapes: A is [m, k] or, transposed, [k, m]; B is [k, n] or [n, k]. Pad each row by 2.
    const int a_rows = gc.ta ? k : m, a_cols = gc.ta ? m : k;
    const int b_rows = gc.tb ? n : k, b_cols = gc.tb ? k : n;
    const int lda = a_cols + 2, ldb = b_cols + 3, ldc = n + 2;
    Vec A = random_vec(rng, (size_t)a_rows * lda), B = random_vec(rng, (size_t)b_rows * ldb),
        C = random_vec(rng, (size_t)m * ldc);
    auto opA = [&](int i, int p) { return gc.ta ? A[p * lda + i] : A[i * lda + p]; };
    auto opB = [&](int p, int j) { return gc.tb ? B[j * ldb + p] : B[p * ldb + j]; };
    Vec ref = C;
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        double s = 0;
        for (int p = 0; p < k; ++p) s += opA(i, p) * opB(p, j);
        ref[i * ldc + j] = alpha * s + beta * C[i * ldc + j];
      }
    auto ab = dev(A), bb = dev(B), cb = dev(C);
    GemmArgs<double> g{gc.ta, gc.tb, m, n, k, alpha, ab, lda, bb, ldb, beta, cb, ldc};
    be->gemm(g);
    Vec got = host(cb);
    for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(got[i], ref[i], 1e-14) << "C element " << i;
    for (int i = 0; i < m; ++i)
      for (int j = n; j < ldc; ++j) EXPECT_EQ(got[i * ldc + j], C[i * ldc + j]) << "padding touched";

    // gemm_batch of two problems is the two gemms.
    auto c1 = dev(C), c2 = dev(C);
    GemmArgs<double> g1 = g, g2 = g;
    g1.c = c1;
    g2.c = c2;
    g2.alpha = 2.0;
    be->gemm_batch({g1, g2});
    Vec r1 = host(c1), r2 = host(c2);
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        EXPECT_NEAR(r1[i * ldc + j], ref[i * ldc + j], 1e-14);
        double prod = (ref[i * ldc + j] - beta * C[i * ldc + j]) / alpha;
        EXPECT_NEAR(r2[i * ldc + j], 2.0 * prod + beta * C[i * ldc + j], 1e-13);
      }
  }
}

TEST_F(BackendOps, GemmWithEmptyInnerDimensionScalesC) {
  const int m = 2, n = 3, ldc = 4;
  Vec C = {1, 2, 3, 50, 4, 5, 6, 60};
  auto cb = dev(C);
  Vec dummy(1, 0.0);
  auto db = dev(dummy);
  GemmArgs<double> g{false, false, m, n, 0, 1.0, db, 1, db, n, 0.5, cb, ldc};
  be->gemm(g);
  EXPECT_EQ(host(cb), (Vec{0.5, 1, 1.5, 50, 2, 2.5, 3, 60}));
  g.beta = 0.0;
  be->gemm(g);
  EXPECT_EQ(host(cb), (Vec{0, 0, 0, 50, 0, 0, 0, 60}));
}

// A separate C input (a residual): C = alpha A B + beta c_in by hand, c_in untouched, C's old
// contents (NaN) never read, the padding between C's rows kept; with k = 0, C = beta c_in.
TEST_F(BackendOps, GemmAddsASeparateCInput) {
  const int m = 2, n = 2, k = 2, ldc = 3;
  auto a = dev({1, 2, 3, 4}), b = dev({5, 6, 7, 8});
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto c = dev({nan, nan, -1, nan, nan, -2}), c_in = dev({10, 20, 99, 30, 40, 99});
  GemmArgs<double> g{false, false, m, n, k, 2.0, a, k, b, n, 0.5, c, ldc, false, c_in.data()};
  be->gemm(g);
  // A B = [19 22; 43 50]
  EXPECT_EQ(host(c), (Vec{2 * 19 + 5, 2 * 22 + 10, -1, 2 * 43 + 15, 2 * 50 + 20, -2}));
  EXPECT_EQ(host(c_in), (Vec{10, 20, 99, 30, 40, 99}));
  g.k = 0;
  be->gemm(g);
  EXPECT_EQ(host(c), (Vec{5, 10, -1, 15, 20, -2}));
}

// ---------------------------------------------------------------- adamw

// torch.optim.AdamW, one step (t is 1-based):
//   p <- p * (1 - lr * wd); m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2;
//   p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
void torch_adamw(Vec& p, const Vec& g, Vec& m, Vec& v, double lr, double b1, double b2, double eps, double wd,
                 int t) {
  for (size_t i = 0; i < p.size(); ++i) {
    p[i] *= 1 - lr * wd;
    m[i] = b1 * m[i] + (1 - b1) * g[i];
    v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
    double mhat = m[i] / (1 - std::pow(b1, t)), vhat = v[i] / (1 - std::pow(b2, t));
    p[i] -= lr * mhat / (std::sqrt(vhat) + eps);
  }
}

TEST_F(BackendOps, AdamwMatchesTorchFormula) {
  const double lr = 0.01, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1, gscale = 0.5;
  const Vec p0 = {0.5, -1.25, 2.0, 0.0, 3.0};
  const Vec g1 = {0.2, -0.4, 1e-3, 0.6, 0.0}, g2 = {-0.1, -0.4, 0.3, 0.6, 2.0};
  auto pb = dev(p0), gb1 = dev(g1), gb2 = dev(g2);
  Buf<double> m(*be, 5), v(*be, 5);

  be->adamw(pb, gb1, m, v, 5, lr, b1, b2, eps, wd, 1, gscale);
  Vec p = host(pb);
  // Step 1 by hand: m = (1-b1) g, v = (1-b2) g^2, so mhat = g, vhat = g^2 and the update is
  // lr * g / (|g| + eps) with g the scaled gradient.
  for (int i = 0; i < 5; ++i) {
    double g = gscale * g1[i];
    double expect = p0[i] * (1 - lr * wd) - lr * g / (std::fabs(g) + eps);
    EXPECT_NEAR(p[i], expect, 1e-14) << i;
    EXPECT_NEAR(host(m)[i], (1 - b1) * g, 1e-16);
    EXPECT_NEAR(host(v)[i], (1 - b2) * g * g, 1e-17);
  }
  EXPECT_NEAR(p[0], 0.5 * 0.999 - 0.01 * 0.1 / (0.1 + 1e-8), 1e-15);  // 0.4895...

  be->adamw(pb, gb2, m, v, 5, lr, b1, b2, eps, wd, 2, gscale);
  Vec rp = p0, rm(5, 0.0), rv(5, 0.0), sg1(5), sg2(5);
  for (int i = 0; i < 5; ++i) {
    sg1[i] = gscale * g1[i];
    sg2[i] = gscale * g2[i];
  }
  torch_adamw(rp, sg1, rm, rv, lr, b1, b2, eps, wd, 1);
  torch_adamw(rp, sg2, rm, rv, lr, b1, b2, eps, wd, 2);
  Vec p2 = host(pb), m2 = host(m), v2 = host(v);
  for (int i = 0; i < 5; ++i) {
    EXPECT_NEAR(p2[i], rp[i], 1e-14) << i;
    EXPECT_NEAR(m2[i], rm[i], 1e-16) << i;
    EXPECT_NEAR(v2[i], rv[i], 1e-17) << i;
  }
  // Bias correction at step 2 for element 1 (same gradient both steps): mhat = g, vhat = g^2, so
  // the update is again lr * sign(g); without the correction it would be smaller than lr by far.
  double q = p0[1] * (1 - lr * wd) + lr;  // g < 0
  EXPECT_NEAR(p2[1], q * (1 - lr * wd) + lr, 1e-9);
}

}  // namespace
}  // namespace dsmoe
