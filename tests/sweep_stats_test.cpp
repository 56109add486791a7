// The statistics of `dsmoe analyze` against closed forms (Student's t with 1 and 2 degrees of
// freedom, incomplete beta special cases), published t tables, and hand-computed paired and
// Welch intervals (the Welch case also as R's t.test gives it).
#include <gtest/gtest.h>

#include <cmath>

#include "sweep/stats.h"

namespace dsmoe {
namespace {

TEST(Stats, IncompleteBetaSpecialCases) {
  for (double x : {0.0, 0.1, 0.37, 0.5, 0.9, 1.0}) {
    EXPECT_NEAR(incomplete_beta(2.5, 1, x), std::pow(x, 2.5), 1e-13) << x;      // I_x(a, 1) = x^a
    EXPECT_NEAR(incomplete_beta(1, 3.5, x), 1 - std::pow(1 - x, 3.5), 1e-13) << x;  // I_x(1, b) = 1 - (1-x)^b
  }
  EXPECT_NEAR(incomplete_beta(7.3, 7.3, 0.5), 0.5, 1e-13);  // symmetry
}

TEST(Stats, StudentTAgainstClosedFormsAndTables) {
  for (double t : {-30.0, -2.0, -0.5, 0.0, 0.7, 3.0, 12.0}) {
    EXPECT_NEAR(student_t_cdf(t, 1), 0.5 + std::atan(t) / M_PI, 1e-13) << t;  // Cauchy
    EXPECT_NEAR(student_t_cdf(t, 2), 0.5 + t / (2 * std::sqrt(2 + t * t)), 1e-13) << t;
  }
  // Two-sided 95 % critical values, as printed in t tables.
  const std::pair<double, double> table[] = {{1, 12.706204736}, {2, 4.302652730}, {3, 3.182446305},
                                             {4, 2.776445105}, {10, 2.228138852}, {30, 2.042272456}};
  for (const auto& [df, t] : table) EXPECT_NEAR(student_t_quantile(0.975, df), t, 1e-8) << df;
  EXPECT_NEAR(student_t_quantile(0.025, 3), -3.182446305, 1e-8);
  EXPECT_NEAR(student_t_quantile(0.995, 5), 4.032142984, 1e-8);  // 99 %
  EXPECT_NEAR(student_t_quantile(0.975, 1e6), 1.959966, 1e-5);   // the normal's
}

TEST(Stats, MeanAndItsInterval) {
  // 1, 2, 3, 6: mean 3, sample variance (4 + 1 + 0 + 9) / 3 = 14/3.
  const Estimate e = mean_estimate({1, 2, 3, 6}, 0.95);
  EXPECT_EQ(e.n, 4);
  EXPECT_DOUBLE_EQ(e.mean, 3);
  EXPECT_NEAR(e.std, std::sqrt(14.0 / 3), 1e-14);
  const double half = 3.182446305 * std::sqrt(14.0 / 3) / 2;
  EXPECT_NEAR(e.low, 3 - half, 1e-8);
  EXPECT_NEAR(e.high, 3 + half, 1e-8);
  EXPECT_EQ(e.df, 3);

  const Estimate one = mean_estimate({2.5}, 0.95);  // one seed: a mean, no spread, no interval
  EXPECT_EQ(one.n, 1);
  EXPECT_EQ(one.mean, 2.5);
  EXPECT_TRUE(std::isnan(one.std) && std::isnan(one.low) && std::isnan(one.high) && std::isnan(one.p_value));
  EXPECT_TRUE(std::isnan(mean_estimate({}, 0.95).mean));
}

TEST(Stats, PairedDifferenceByHand) {
  // Differences -0.03, -0.02, -0.02: mean -0.07/3, sd sqrt(1/3) * 0.01, se 0.01/3, t = -7 on
  // 2 df, whose two-sided p is 1 - 7/sqrt(51) (the closed form of the t(2) cdf).
  const Estimate d = paired_difference({2.30, 2.32, 2.29}, {2.33, 2.34, 2.31}, 0.95);
  EXPECT_EQ(d.n, 3);
  EXPECT_NEAR(d.mean, -0.07 / 3, 1e-12);
  EXPECT_NEAR(d.std, 0.01 / std::sqrt(3.0), 1e-12);
  EXPECT_NEAR(d.low, -0.07 / 3 - 4.302652730 * 0.01 / 3, 1e-10);
  EXPECT_NEAR(d.high, -0.07 / 3 + 4.302652730 * 0.01 / 3, 1e-10);
  EXPECT_NEAR(d.p_value, 1 - 7 / std::sqrt(51.0), 1e-10);
  // The same values unpaired: the seeds' common offsets no longer cancel, and the interval
  // holds 0 (what an unpaired spread made of a real effect).
  const Estimate w = welch_difference({2.30, 2.32, 2.29}, {2.33, 2.34, 2.31}, 0.95);
  EXPECT_LT(w.low, 0);
  EXPECT_GT(w.high, 0);
}

// Tables: z(0.975) = 1.959963985, z(0.8) = 0.841621234. With diff = sd the paired t test needs
// 10 pairs for 80 % power at the 5 % level (Guenther: 7.849 + 1.921 = 9.77, up to 10; the exact
// noncentral-t answer is also 10); half the difference needs 31.40 + 1.92 = 33.3, so 34.
TEST(Stats, NormalQuantileAndPairsForPowerByHand) {
  EXPECT_NEAR(normal_quantile(0.975), 1.959963985, 1e-9);
  EXPECT_NEAR(normal_quantile(0.8), 0.841621234, 1e-9);
  EXPECT_NEAR(normal_quantile(0.5), 0.0, 1e-12);
  EXPECT_NEAR(normal_quantile(0.025), -1.959963985, 1e-9);
  EXPECT_EQ(pairs_for_power(1.0, 1.0, 0.95, 0.8), 10);
  EXPECT_EQ(pairs_for_power(-0.01, 0.01, 0.95, 0.8), 10);  // the sign does not matter
  EXPECT_EQ(pairs_for_power(0.5, 1.0, 0.95, 0.8), 34);
  EXPECT_EQ(pairs_for_power(1.0, 0.0, 0.95, 0.8), 2);  // no spread: the fewest pairs with one
  EXPECT_EQ(pairs_for_power(0.0, 1.0, 0.95, 0.8), 0);  // no difference: never
  EXPECT_GT(pairs_for_power(1.0, 1.0, 0.99, 0.8), 10);
  EXPECT_GT(pairs_for_power(1.0, 1.0, 0.95, 0.9), 10);
}

TEST(Stats, WelchByHandAndAsRGivesIt) {
  // a = 1, 2, 3 (var 1), b = 2, 4, 6, 8 (var 20/3): se^2 = 1/3 + 5/3 = 2, df = 4 / (1/18 + 25/27).
  // R: t.test(c(1,2,3), c(2,4,6,8)): t = -2.1213, df = 4.0755, p-value = 0.09991,
  // 95 percent confidence interval: -6.897975 0.897975.
  const Estimate w = welch_difference({1, 2, 3}, {2, 4, 6, 8}, 0.95);
  EXPECT_DOUBLE_EQ(w.mean, -3);
  EXPECT_NEAR(w.df, 4 / (1.0 / 18 + 25.0 / 27), 1e-12);
  EXPECT_NEAR(w.low, -6.897975, 1e-6);
  EXPECT_NEAR(w.high, 0.897975, 1e-6);
  EXPECT_NEAR(w.p_value, 0.0999129, 1e-6);
  // Fewer than two values on a side: no interval.
  EXPECT_TRUE(std::isnan(welch_difference({1}, {2, 3}, 0.95).low));
}

}  // namespace
}  // namespace dsmoe
