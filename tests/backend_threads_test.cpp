// Host threads per rank and the backend choice, by hand values: the thread rule for given
// affinity masks and rank counts, the core list as text, BLAS's threads around parallel regions,
// and which backend a run gets for the GPUs its nodes see.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

#include "backend/blas_select.h"
#include "backend/select.h"
#include "backend/threads.h"
#include "test_util.h"

namespace dsmoe {
namespace {

using ::testing::HasSubstr;

CoreSet range(int first, int last) {
  CoreSet s;
  for (int c = first; c <= last; ++c) s.push_back(c);
  return s;
}

TEST(Threads, CoresOfTheMaskDividedByTheRanksSharingThem) {
  const CoreSet all = range(0, 15);
  EXPECT_EQ(threads_for(all, {all}), 16);                  // one rank, 16 cores
  EXPECT_EQ(threads_for(all, {all, all, all, all}), 4);    // 4 ranks unbound on 16 cores
  EXPECT_EQ(threads_for(all, {all, all, all}), 5);         // 3 ranks: 5 each, 15 of 16 cores
  EXPECT_EQ(threads_for(all, std::vector<CoreSet>(32, all)), 1);  // more ranks than cores: 1 each
  // Bound ranks: each to its half, or to one core of its own.
  EXPECT_EQ(threads_for(range(0, 7), {range(0, 7), range(8, 15)}), 8);
  EXPECT_EQ(threads_for({3}, {{2}, {3}}), 1);
  // Overlapping masks count where they meet.
  EXPECT_EQ(threads_for(range(0, 7), {range(0, 7), range(4, 11), range(12, 15)}), 4);
}

// A pthread OpenBLAS runs on one thread inside OneBlasThread and gets its threads back after; the
// OpenMP build (or OPENBLAS_NUM_THREADS set) is left alone. (Run this binary with
// LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-pthread for the pthread case.)
TEST(Threads, OneBlasThreadOnlyWherePthreadBlasThreadsAreOurs) {
  const bool ours = blas_threads_are_ours();
  fit_blas_threads(2);
  const int before = blas_threads();
  if (ours) {
    EXPECT_EQ(before, 2);
  }
  {
    const OneBlasThread serial;
    EXPECT_EQ(blas_threads(), ours ? 1 : before);
  }
  EXPECT_EQ(blas_threads(), before);
}

TEST(Threads, CoresAsText) {
  EXPECT_EQ(cores_text(range(0, 15)), "0-15");
  EXPECT_EQ(cores_text({0, 2, 3, 4, 8, 10, 11}), "0,2-4,8,10-11");
  EXPECT_EQ(cores_text({5}), "5");
  EXPECT_FALSE(affinity_cores().empty());
}

TEST(BackendChoice, TheRanksUseGpusOnlyWhereEveryNodeHasOneForEach) {
  EXPECT_FALSE(use_gpus("cpu", true, true, ""));
  EXPECT_TRUE(use_gpus("cuda", true, true, ""));
  EXPECT_TRUE(use_gpus("auto", true, true, ""));
  EXPECT_FALSE(use_gpus("auto", false, true, "node a runs 2 rank(s) and sees 1 GPU(s)"));  // every rank on the CPU
  EXPECT_FALSE(use_gpus("auto", false, false, "node a runs 1 rank(s) and sees 0 GPU(s)"));  // no GPU anywhere
  EXPECT_THAT(test::error_of([] { use_gpus("cuda", false, true, "node a runs 2 rank(s) and sees 1 GPU(s)"); }),
              HasSubstr("backend: cuda needs a GPU per rank, but node a runs 2 rank(s) and sees 1 GPU(s): run at most "
                        "as many ranks per node as it has GPUs, or set backend: cpu"));
  EXPECT_THAT(test::error_of([] { use_gpus("cuda", false, true, ""); }),
              HasSubstr("another node has fewer GPUs than ranks"));
}

}  // namespace
}  // namespace dsmoe
