#include "sweep/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "util/check.h"

namespace dsmoe {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The continued fraction of I_x(a, b) (Numerical Recipes' betacf), by Lentz's method; it
// converges fast for x < (a + 1) / (a + b + 2).
double beta_fraction(double a, double b, double x) {
  constexpr double tiny = 1e-300;
  const auto guard = [](double v) { return std::fabs(v) < tiny ? tiny : v; };
  double c = 1, d = 1 / guard(1 - (a + b) * x / (a + 1));
  double f = d;
  for (int m = 1; m <= 1000; ++m) {
    const double m2 = 2.0 * m;
    double num = m * (b - m) * x / ((a + m2 - 1) * (a + m2));  // even step
    d = 1 / guard(1 + num * d);
    c = guard(1 + num / c);
    f *= d * c;
    num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1));  // odd step
    d = 1 / guard(1 + num * d);
    c = guard(1 + num / c);
    const double delta = d * c;
    f *= delta;
    if (std::fabs(delta - 1) < 1e-16) break;
  }
  return f;
}

// Two-sided p of t with `df` degrees of freedom: P(|T| >= |t|) = I_{df/(df+t^2)}(df/2, 1/2).
double two_sided_p(double t, double df) {
  if (std::isinf(t)) return 0;
  return incomplete_beta(df / 2, 0.5, df / (df + t * t));
}

Estimate interval(int n, double mean, double std, double se, double df, double confidence) {
  Estimate e;
  e.n = n;
  e.mean = mean;
  e.std = std;
  e.df = df;
  if (!(df > 0) || std::isnan(se)) {
    e.low = e.high = e.p_value = kNaN;
    return e;
  }
  const double half = student_t_quantile(0.5 + confidence / 2, df) * se;
  e.low = mean - half;
  e.high = mean + half;
  e.p_value = se > 0 ? two_sided_p(mean / se, df) : (mean == 0 ? 1.0 : 0.0);
  return e;
}

struct Moments {
  int n = 0;
  double mean = kNaN, var = kNaN;  // var: sample variance, NaN for n < 2
};

Moments moments(const std::vector<double>& x) {
  Moments m;
  m.n = static_cast<int>(x.size());
  if (x.empty()) return m;
  m.mean = 0;
  for (double v : x) m.mean += v;
  m.mean /= m.n;
  if (m.n < 2) return m;
  m.var = 0;
  for (double v : x) m.var += (v - m.mean) * (v - m.mean);
  m.var /= m.n - 1;
  return m;
}

}  // namespace

double incomplete_beta(double a, double b, double x) {
  DSMOE_ASSERT(a > 0 && b > 0);
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const double front = std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) +
                                b * std::log1p(-x));
  if (x < (a + 1) / (a + b + 2)) return front * beta_fraction(a, b, x) / a;
  return 1 - front * beta_fraction(b, a, 1 - x) / b;
}

double student_t_cdf(double t, double df) {
  DSMOE_ASSERT(df > 0);
  const double tail = two_sided_p(t, df) / 2;
  return t > 0 ? 1 - tail : tail;
}

double student_t_quantile(double p, double df) {
  DSMOE_ASSERT(p > 0 && p < 1 && df > 0);
  if (p < 0.5) return -student_t_quantile(1 - p, df);
  double lo = 0, hi = 1;
  while (student_t_cdf(hi, df) < p) lo = hi, hi *= 2;
  for (int i = 0; i < 200 && hi - lo > 1e-13 * hi; ++i) {
    const double mid = (lo + hi) / 2;
    (student_t_cdf(mid, df) < p ? lo : hi) = mid;
  }
  return (lo + hi) / 2;
}

double normal_quantile(double p) {
  DSMOE_ASSERT(p > 0 && p < 1);
  double lo = -40, hi = 40;  // bisection on the cdf 0.5 erfc(-z / sqrt 2)
  for (int i = 0; i < 200 && hi - lo > 1e-14; ++i) {
    const double mid = (lo + hi) / 2;
    (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
  }
  return (lo + hi) / 2;
}

int pairs_for_power(double diff, double sd, double confidence, double power) {
  DSMOE_ASSERT(std::isfinite(diff) && std::isfinite(sd) && sd >= 0);
  if (diff == 0) return 0;
  const double za = normal_quantile((1 + confidence) / 2), zb = normal_quantile(power);
  const double n = (za + zb) * (za + zb) * (sd / diff) * (sd / diff) + za * za / 2;
  return std::max(2, static_cast<int>(std::ceil(std::min(n, 1e9))));
}

Estimate mean_estimate(const std::vector<double>& x, double confidence) {
  const Moments m = moments(x);
  const double std = std::sqrt(m.var);
  return interval(m.n, m.mean, std, std / std::sqrt(static_cast<double>(m.n)), m.n - 1, confidence);
}

Estimate paired_difference(const std::vector<double>& a, const std::vector<double>& b, double confidence) {
  DSMOE_ASSERT(a.size() == b.size());
  std::vector<double> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return mean_estimate(d, confidence);
}

Estimate welch_difference(const std::vector<double>& a, const std::vector<double>& b, double confidence) {
  const Moments ma = moments(a), mb = moments(b);
  const double mean = ma.mean - mb.mean;
  const double qa = ma.var / ma.n, qb = mb.var / mb.n;  // squared standard errors; NaN below two values
  const double se = std::sqrt(qa + qb);
  const double df = (qa + qb) * (qa + qb) / (qa * qa / (ma.n - 1) + qb * qb / (mb.n - 1));
  // Both variances 0: no spread to scale the difference by; the t test degenerates as for a mean.
  return interval(ma.n + mb.n, mean, kNaN, se, qa + qb > 0 ? df : ma.n + mb.n - 2.0, confidence);
}

}  // namespace dsmoe
