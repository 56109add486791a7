#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "data/batches.h"
#include "test_util.h"
#include "util/check.h"

namespace dsmoe {
namespace {

using test::error_of;

TEST(Split, SizesAreHandComputed) {
  Split s = split_tokens(1000, 0.1, 8);  // floor(100.0) = 100
  EXPECT_EQ(s.n_train, 900);
  EXPECT_EQ(s.n_val, 100);
  s = split_tokens(1005, 0.01, 8);  // floor(10.05) = 10
  EXPECT_EQ(s.n_train, 995);
  EXPECT_EQ(s.n_val, 10);
  s = split_tokens(19, 0.5, 8);  // floor(9.5) = 9: train 10 = T + 2, val 9 = T + 1, both just enough
  EXPECT_EQ(s.n_train, 10);
  EXPECT_EQ(s.n_val, 9);
}

TEST(Split, TooShortSplitsAreErrors) {
  std::string e = error_of([] { split_tokens(18, 0.5, 8); });
  EXPECT_EQ(e.rfind("data: the training split has 9 tokens, fewer than seq_len + 2 = 10", 0), 0u) << e;
  EXPECT_NE(e.find("data.val_fraction"), std::string::npos) << e;
  EXPECT_NE(e.find("model.seq_len"), std::string::npos) << e;

  e = error_of([] { split_tokens(1000, 0.005, 8); });  // 5 validation tokens
  EXPECT_EQ(e.rfind("data: the validation split has 5 tokens, fewer than seq_len + 1 = 9", 0), 0u) << e;
  EXPECT_NE(e.find("data.val_fraction"), std::string::npos) << e;
  EXPECT_NE(e.find("model.seq_len"), std::string::npos) << e;
}

TEST(TrainOrder, UnshuffledStartsAreHandComputed) {
  // n_train = 100, T = 8, B = 4: start = (i * 8) mod 91 with i = s*4 + j.
  TrainOrder order(100, 8, 4, false, 1);
  const std::vector<std::vector<int64_t>> expected = {
      {0, 8, 16, 24}, {32, 40, 48, 56}, {64, 72, 80, 88}, {5, 13, 21, 29}};
  for (int s = 0; s < 4; ++s)
    for (int j = 0; j < 4; ++j) EXPECT_EQ(order.start(s, j), expected[s][j]) << "step " << s << " j " << j;
  // Step 10: i = 40..43, 320 mod 91 = 47.
  EXPECT_EQ(order.start(10, 0), 47);
  EXPECT_EQ(order.start(10, 3), 71);
}

// The shuffled starts of samples [0, n) in sample order.
std::vector<int64_t> shuffled(int64_t n_train, int T, int B, uint64_t seed, int64_t steps) {
  TrainOrder order(n_train, T, B, true, seed);
  std::vector<int64_t> starts;
  for (int64_t s = 0; s < steps; ++s)
    for (int j = 0; j < B; ++j) starts.push_back(order.start(s, j));
  return starts;
}

TEST(TrainOrder, ShuffledEpochsVisitEveryWindowOnce) {
  // n_train = 100, T = 8: W = ceil(91 / 8) = 12 windows 0, 8, ..., 88; B = 3 so 4 steps per epoch.
  const std::vector<int64_t> starts = shuffled(100, 8, 3, 7, 20);
  std::vector<int64_t> windows(12);
  for (int k = 0; k < 12; ++k) windows[k] = 8 * k;
  for (int e = 0; e < 5; ++e) {
    std::vector<int64_t> epoch(starts.begin() + 12 * e, starts.begin() + 12 * (e + 1));
    std::sort(epoch.begin(), epoch.end());
    EXPECT_EQ(epoch, windows) << "epoch " << e;
  }
  // Epochs differ from each other.
  EXPECT_FALSE(std::equal(starts.begin(), starts.begin() + 12, starts.begin() + 12));
}

TEST(TrainOrder, ShuffledEpochsAcrossStepBoundaries) {
  // W = ceil((1000 - 17) / 16) = 62, not a multiple of B = 5: epochs end inside a step.
  const std::vector<int64_t> starts = shuffled(1000, 16, 5, 3, 62);
  for (int e = 0; e < 5; ++e) {
    std::vector<int64_t> epoch(starts.begin() + 62 * e, starts.begin() + 62 * (e + 1));
    std::sort(epoch.begin(), epoch.end());
    for (int k = 0; k < 62; ++k) ASSERT_EQ(epoch[k], 16 * k) << "epoch " << e;
  }
}

TEST(TrainOrder, ShuffleIsSeeded) {
  EXPECT_EQ(shuffled(1000, 16, 4, 11, 30), shuffled(1000, 16, 4, 11, 30));
  EXPECT_NE(shuffled(1000, 16, 4, 11, 30), shuffled(1000, 16, 4, 12, 30));
  EXPECT_NE(shuffled(1000, 16, 4, 11, 30), shuffled(1000, 8, 4, 11, 30));
}

TEST(TrainOrder, ShuffleDependsOnlyOnStepAndIndex) {
  // Random access (as after a resume, or a rank reading its own slice) gives the same starts.
  const std::vector<int64_t> seq = shuffled(500, 8, 4, 5, 40);
  TrainOrder order(500, 8, 4, true, 5);
  for (int64_t s = 39; s >= 0; s -= 3)
    for (int j = 3; j >= 0; --j) EXPECT_EQ(order.start(s, j), seq[s * 4 + j]);
}

TEST(TrainOrder, WindowsStayInsideTheTrainingSplit) {
  for (int64_t n_train : {10, 11, 17, 18, 100, 1001})
    for (bool shuffle : {false, true}) {
      TrainOrder order(n_train, 8, 4, shuffle, 9);
      for (int64_t s = 0; s < 200; ++s)
        for (int j = 0; j < 4; ++j) {
          int64_t start = order.start(s, j);
          ASSERT_GE(start, 0);
          ASSERT_LE(start + 8 + 1, n_train) << "n_train " << n_train << " shuffle " << shuffle;
        }
    }
}

TEST(GatherWindows, HandExample) {
  const std::vector<int32_t> tokens = {10, 11, 12, 13, 14, 15, 16, 17};
  std::vector<int32_t> inputs(6), targets(6);
  gather_windows(tokens.data(), {4, 0}, 3, inputs.data(), targets.data());
  EXPECT_EQ(inputs, (std::vector<int32_t>{14, 15, 16, 10, 11, 12}));
  EXPECT_EQ(targets, (std::vector<int32_t>{15, 16, 17, 11, 12, 13}));
}

TEST(EvalStart, ConsecutiveWindowsInTheValidationSplit) {
  const Split split{100, 33};  // validation tokens [100, 133)
  EXPECT_EQ(eval_start(split, 8, 0), 100);
  EXPECT_EQ(eval_start(split, 8, 1), 108);
  EXPECT_EQ(eval_start(split, 8, 3), 124);  // [124, 133) just fits
  std::string e = error_of([&] { eval_start(split, 8, 4); });  // [132, 141) does not
  EXPECT_EQ(e.rfind("data: evaluation sequence 4 needs tokens [132, 141) but the validation split is "
                    "[100, 133)", 0), 0u) << e;
  EXPECT_NE(e.find("train.eval_batches"), std::string::npos) << e;
  EXPECT_EQ(eval_windows(split, 8), 4);
  EXPECT_EQ(eval_windows(Split{100, 32}, 8), 3);  // [124, 133) no longer fits
  EXPECT_EQ(eval_windows(Split{100, 9}, 8), 1);
  EXPECT_EQ(eval_windows(Split{100, 8}, 8), 0);
}

}  // namespace
}  // namespace dsmoe
