// The gradient all-reduce's buckets by hand values on a small table, and GradSync's starts and
// waits against a communicator that records them.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "test_util.h"
#include "train/grad_buckets.h"

namespace dsmoe {
namespace {

// A model's layout in miniature: embedding, head, two layers' tensors, then the routed experts
// (layer 0's a gate/up pair, interleaved). Offsets:
//   emb [0,3) head [3,5) l0 [5,9) l1 [9,13) | l0 gate/up [13,21) l1 down [21,25).
ParamTable table() {
  ParamTable t;
  t.add("emb", {3});
  t.add("head", {2});
  t.add("layers/0/a", {4});
  t.add("layers/1/a", {4});
  t.add_pair("layers/0/gate", "layers/0/up", {2, 1, 2}, true, 0, 4);
  t.add("layers/1/down", {2, 2}, true, 0, 4);
  return t;
}

// As the backward finishes them: the head, the last layer, the first, the embedding.
std::vector<std::vector<std::string>> stages() {
  return {{"head"}, {"layers/1/a", "layers/1/down"}, {"layers/0/up", "layers/0/a", "layers/0/gate"}, {"emb"}};
}

void expect_buckets(const std::vector<GradBucket>& got, const std::vector<GradBucket>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE("bucket " + std::to_string(i));
    EXPECT_EQ(got[i].begin, want[i].begin);
    EXPECT_EQ(got[i].size, want[i].size);
    EXPECT_EQ(got[i].sharded, want[i].sharded);
    EXPECT_EQ(got[i].stage, want[i].stage);
  }
}

TEST(GradBuckets, NoBucketSizeIsOneRangeOfEachKindAfterTheBackward) {
  expect_buckets(plan_grad_buckets(table(), stages(), 0), {{0, 13, false, 3}, {13, 12, true, 3}});
  // Buckets larger than the model: the same, the stages' ranges merged into one.
  expect_buckets(plan_grad_buckets(table(), stages(), 100), {{0, 13, false, 3}, {13, 12, true, 3}});
}

TEST(GradBuckets, FullBucketsStartAfterTheStageThatFilledThem) {
  // 4 elements: the head (2) waits for the last layer; each layer's experts fill one alone.
  expect_buckets(plan_grad_buckets(table(), stages(), 4), {{9, 4, false, 1},
                                                           {3, 2, false, 1},
                                                           {21, 4, true, 1},
                                                           {5, 4, false, 2},
                                                           {13, 8, true, 2},
                                                           {0, 3, false, 3}});
  // 1 element: every stage starts its own ranges.
  expect_buckets(plan_grad_buckets(table(), stages(), 1), {{3, 2, false, 0},
                                                           {9, 4, false, 1},
                                                           {21, 4, true, 1},
                                                           {5, 4, false, 2},
                                                           {13, 8, true, 2},
                                                           {0, 3, false, 3}});
}

TEST(GradBuckets, EveryTensorInExactlyOneStage) {
  auto s = stages();
  s[2].pop_back();  // layers/0/gate in no stage
  auto error = [&] { return test::error_of([&] { plan_grad_buckets(table(), s, 0); }); };
  EXPECT_THAT(error(), ::testing::HasSubstr("tensor layers/0/gate is in no stage"));
  s = stages();
  s[3].push_back("head");
  EXPECT_THAT(error(), ::testing::HasSubstr("tensor head is in two stages"));
  s[3].back() = "layers/2/a";
  EXPECT_THAT(error(), ::testing::HasSubstr("layers/2/a"));
}

// Records the all-reduces started (offset into the buffer and length) and the waits.
class RecordingComm final : public Comm {
 public:
  RecordingComm(int size, const float* base, std::vector<std::string>& log, std::string name)
      : size_(size), base_(base), log_(log), name_(std::move(name)) {}
  int rank() const override { return 0; }
  int size() const override { return size_; }
  void start_allreduce_sum(float* x, int64_t n) override {
    log_.push_back(name_ + " start " + std::to_string(x - base_) + "+" + std::to_string(n));
  }
  void wait_allreduces() override { log_.push_back(name_ + " wait"); }
  void allreduce_sum(float*, int64_t) override { ADD_FAILURE() << "a blocking all-reduce"; }
  void allreduce_sum(double*, int64_t) override {}
  void allreduce_sum(int64_t*, int64_t) override {}
  void allreduce_max(double*, int64_t) override {}
  void exscan_sum(int64_t*, int64_t) override {}
  void alltoall(const int64_t*, int64_t*, int64_t) override {}
  using Comm::alltoallv;
  void alltoallv(const void*, const std::vector<int64_t>&, const std::vector<int64_t>&, void*,
                 const std::vector<int64_t>&, const std::vector<int64_t>&, int64_t) override {}
  void allgather_blocks(float*, const std::vector<int64_t>&, const std::vector<int64_t>&) override {}
  void gather(const void*, int64_t, void*, int) override {}
  void broadcast(void*, int64_t, int) override {}
  void barrier() override {}
  std::unique_ptr<Comm> split(int, int) override { return nullptr; }

 private:
  int size_;
  const float* base_;
  std::vector<std::string>& log_;
  std::string name_;
};

TEST(GradSync, StartsEachBucketAfterItsStageAndWaitsForAll) {
  std::vector<float> grads(25);
  std::vector<std::string> log;
  RecordingComm world(4, grads.data(), log, "world"), replicas(2, grads.data(), log, "replicas");
  GradSync sync(plan_grad_buckets(table(), stages(), 4), grads.data(), world, replicas);
  for (int step = 0; step < 2; ++step) {  // the same again: a step starts from the first bucket
    log.clear();
    sync.stage_done(0);
    EXPECT_TRUE(log.empty()) << "the head alone fills no bucket";
    sync.stage_done(1);
    EXPECT_EQ(log, std::vector<std::string>({"world start 9+4", "world start 3+2", "replicas start 21+4"}));
    log.clear();
    sync.stage_done(2);
    sync.stage_done(3);
    sync.finish();
    EXPECT_EQ(log, std::vector<std::string>(
                       {"world start 5+4", "replicas start 13+8", "world start 0+3", "world wait", "replicas wait"}));
  }
}

TEST(GradSync, AStepWithoutStagesStartsEverythingAtTheEnd) {
  std::vector<float> grads(25);
  std::vector<std::string> log;
  RecordingComm world(2, grads.data(), log, "world"), replicas(1, grads.data(), log, "replicas");
  GradSync sync(plan_grad_buckets(table(), stages(), 4), grads.data(), world, replicas);
  sync.finish();
  // A group of one rank has nothing to sum: its buckets start nothing.
  EXPECT_EQ(log, std::vector<std::string>({"world start 9+4", "world start 3+2", "world start 5+4", "world start 0+3",
                                           "world wait", "replicas wait"}));
}

}  // namespace
}  // namespace dsmoe
