// Statistics of a few seeds per variant: the mean with its Student-t confidence interval, and
// the difference of two variants' means, paired by seed or (where seeds do not pair) Welch's.
// Intervals are two-sided; a p-value is that of the t test of "the true mean (difference) is 0".
#pragma once
#include <vector>

namespace dsmoe {

// Regularized incomplete beta I_x(a, b), a, b > 0, x in [0, 1].
double incomplete_beta(double a, double b, double x);

// P(T <= t) for Student's t with `df` > 0 degrees of freedom (df need not be an integer).
double student_t_cdf(double t, double df);

// The t with P(T <= t) = p, for p in (0, 1).
double student_t_quantile(double p, double df);

// The z with P(Z <= z) = p for the standard normal, p in (0, 1).
double normal_quantile(double p);

// Pairs (seeds) a paired comparison needs to resolve a true mean difference `diff` whose pairs
// spread with standard deviation `sd`, at two-sided level 1 - confidence, with probability
// `power`: Guenther's approximation to the paired t test, n = (z_a + z_b)^2 (sd / diff)^2 +
// z_a^2 / 2 rounded up (z_a = z at (1 + confidence) / 2, z_b = z at power), at least 2. For a
// planning figure from observed values it is as rough as they are. 0 when diff is 0.
int pairs_for_power(double diff, double sd, double confidence, double power);

// An estimate with its interval. With fewer values than it needs (one for a mean, two for an
// interval), the missing parts are NaN.
struct Estimate {
  int n = 0;        // values (or pairs) it rests on
  double mean = 0;  // NaN when n = 0
  double std = 0;   // sample standard deviation (n - 1 in the denominator); NaN when n < 2
  double low = 0, high = 0;  // the confidence interval
  double df = 0;             // degrees of freedom of the t distribution used
  double p_value = 0;        // two-sided, of mean = 0
};

// The mean of `x` and its `confidence` interval: mean -/+ t(df = n - 1) * std / sqrt(n).
Estimate mean_estimate(const std::vector<double>& x, double confidence);

// a[i] - b[i] over pairs (same seed): the mean difference and its interval, df = pairs - 1.
Estimate paired_difference(const std::vector<double>& a, const std::vector<double>& b, double confidence);

// mean(a) - mean(b) for unpaired samples with unequal variances (Welch): the standard error
// sqrt(sa^2/na + sb^2/nb) and the Welch-Satterthwaite degrees of freedom. Needs two of each.
Estimate welch_difference(const std::vector<double>& a, const std::vector<double>& b, double confidence);

}  // namespace dsmoe
