#include <gtest/gtest.h>

#include <cmath>

#include "util/rng.h"

namespace dsmoe {

TEST(Rng, KeyedNormalsArePureAndStandard) {
  EXPECT_EQ(normal_from_key(hash_key(1, 2, 3)), normal_from_key(hash_key(1, 2, 3)));
  EXPECT_NE(normal_from_key(hash_key(1, 2, 3)), normal_from_key(hash_key(1, 2, 4)));
  double sum = 0, sum2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    double x = normal_from_key(hash_key(7, i));
    sum += x;
    sum2 += x * x;
  }
  // Mean and variance of n samples: standard errors 1/sqrt(n) ~ 0.0022 and sqrt(2/n) ~ 0.0032.
  EXPECT_NEAR(sum / n, 0.0, 0.012);
  EXPECT_NEAR(sum2 / n, 1.0, 0.016);
}

TEST(Rng, BelowStaysInRange) {
  Rng r(5);
  for (int i = 0; i < 10000; ++i) EXPECT_LT(r.below(7), 7u);
}

}  // namespace dsmoe
