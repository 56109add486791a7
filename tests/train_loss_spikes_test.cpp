// Loss-spike detection against hand-computed z-scores.
#include <gtest/gtest.h>

#include <cmath>

#include "train/loss_spikes.h"

namespace dsmoe {
namespace {

TEST(LossSpikes, ZScoreOverTheWindow) {
  LossSpikes spikes(4, 3.0);
  double z = 0;
  for (double l : {2.0, 2.2, 1.8, 2.0}) EXPECT_FALSE(spikes.add(l, &z)) << "window still filling";
  // mean 2.0, population sd sqrt((0 + 0.04 + 0.04 + 0) / 4) = sqrt(0.02) = 0.1414...
  EXPECT_TRUE(spikes.add(2.5, &z));
  EXPECT_NEAR(z, 0.5 / std::sqrt(0.02), 1e-9);
  // Window now 2.2, 1.8, 2.0, 2.5: mean 2.125, a loss of 2.1 is ordinary.
  EXPECT_FALSE(spikes.add(2.1, &z));
  EXPECT_LT(z, 0.0);
}

TEST(LossSpikes, FlatLossesHaveASpreadFloorAndNanIsIgnored) {
  LossSpikes spikes(3, 6.0);
  double z = 0;
  for (int i = 0; i < 3; ++i) spikes.add(1.0, &z);
  EXPECT_FALSE(spikes.add(1.004, &z));  // sd floor 1e-3: z = 4
  EXPECT_NEAR(z, 4.0, 1e-9);
  EXPECT_FALSE(spikes.add(NAN, &z));
  EXPECT_TRUE(spikes.add(2.0, &z));
}

}  // namespace
}  // namespace dsmoe
