// `dsmoe simulate` end to end: a breakdown and an HDF5 record, a bench record as the compute
// rate, simulation files, and errors that name the option, file or key.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "io/h5.h"
#include "test_util.h"
#include "train_fixture.h"

namespace dsmoe {
namespace {

using ::testing::HasSubstr;
using test::run_dsmoe;

struct Simulate : ::testing::Test {
  test::TempDir dir;
  std::string config() {
    const std::string path = dir.file("run.yaml");
    std::string yaml = test::tiny_yaml(dir.file("corpus.txt"), dir.file("out"));
    yaml.replace(yaml.find("vocab_size: 0"), 13, "vocab_size: 256");
    test::write_file(path, yaml);
    return path;
  }
};

TEST_F(Simulate, BreakdownAndHdf5) {
  const std::string out = dir.file("sim.h5");
  test::RunResult r = run_dsmoe("simulate " + config() + " --gpus 4 --gpus-per-node 2 --compute-rate 1e12 --out " + out +
                                " --routing zipf:1.0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("tiny on 4 GPUs (2 per node, 2 nodes), expert-parallel 4"));
  EXPECT_THAT(r.output, HasSubstr("straggler cost"));
  EXPECT_THAT(r.output, HasSubstr("MiB inter-node"));
  EXPECT_THAT(r.output, HasSubstr("peak memory (rank"));
  h5::Handle f = h5::open_file(out, H5F_ACC_RDONLY);
  ASSERT_TRUE(f.valid());
  h5::Handle g = h5::open_group(f, "g4");
  EXPECT_GT(h5::read_attr_double(g, "step_s"), 0);
  EXPECT_GT(h5::read_attr_double(g, "straggler_s"), 0);
  EXPECT_EQ(h5::shape(h5::open_dataset(g, "rank/memory_bytes")), (std::vector<int64_t>{4}));
}

TEST_F(Simulate, BenchJsonFeedsTheRate) {
  const std::string cfg = config();
  test::write_file(dir.file("corpus.txt"), test::make_corpus(400, 3));
  const std::string json = dir.file("bench.json");
  test::RunResult b = run_dsmoe("bench " + cfg + " --steps 1 --warmup 0 --json " + json);
  ASSERT_EQ(b.exit_code, 0) << b.output;
  EXPECT_THAT(test::read_file(json), HasSubstr("\"compute_flops_per_rank\": "));
  test::RunResult r = run_dsmoe("simulate " + cfg + " --gpus 1 --compute-rate " + json + " --out " + dir.file("s.h5"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("(measured: " + json + ", cpu, 1 rank)"));
  EXPECT_THAT(r.output, HasSubstr("memory as the cpu backend allocates"));
}

TEST_F(Simulate, SimulationFile) {
  const std::string cfg = config();
  const std::string file = dir.file("s.yaml");
  test::write_file(file, "simulate: t\nconfig: " + cfg + "\nclusters:\n  - {gpus: 2, gpus_per_node: 2}\n"
                         "  - {gpus: 4, gpus_per_node: 2}\nrouting: [uniform, 'zipf:1.5']\n"
                         "variants: [{name: free}, {name: rd2, set: [moe.route_devices=2]}]\nout: " +
                             dir.file("t.h5") + "\n");
  test::RunResult r = run_dsmoe("simulate --sweep " + file);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("2 cluster(s) x 2 routing source(s) x 2 variant(s)"));
  EXPECT_THAT(r.output, HasSubstr("rd2/zipf:1.5"));
  h5::Handle f = h5::open_file(dir.file("t.h5"), H5F_ACC_RDONLY);
  EXPECT_TRUE(h5::exists(f, "g4/rd2/zipf:1.5/memory"));
}

// The paper's 16B model on one node of 8 GPUs of 80 GB: 153 GiB per GPU as it is, under 70 GiB
// with the optimizer sharded and 4 micro-batches, which --gpu-memory finds and names.
TEST_F(Simulate, GpuMemoryNamesTheFastestSettingThatFits) {
  test::RunResult r = run_dsmoe("simulate " DSMOE_SOURCE_DIR "/experiments/configs/deepseekmoe_16b.yaml --gpus 8 "
                                "--gpus-per-node 8 --gpu-memory 80e9 --out " + dir.file("s.h5"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("memory settings against 74.506 GiB per GPU"));
  const std::string best =
      "fastest that fits: --set train.recompute=none --set parallel.shard_optimizer=true --set train.micro_batches=4 (";
  const size_t at = r.output.find(best);
  ASSERT_NE(at, std::string::npos) << r.output;
  EXPECT_LT(std::stod(r.output.substr(at + best.size())), 70.0);  // GiB
  r = run_dsmoe("simulate " + config() + " --gpus 1 --gpu-memory 1000");
  EXPECT_THAT(r.output, HasSubstr("none fits: the smallest peak is"));
  EXPECT_THAT(run_dsmoe("simulate " + config() + " --gpus 1 --gpu-memory 0").output,
              HasSubstr("--gpu-memory must be > 0 bytes"));
}

TEST_F(Simulate, ErrorsNameTheOptionFileOrKey) {
  const std::string cfg = config();
  EXPECT_THAT(run_dsmoe("simulate " + cfg).output, HasSubstr("--gpus is required"));
  EXPECT_THAT(run_dsmoe("simulate " + cfg + " --gpus 3").output, HasSubstr("train.batch_size"));
  EXPECT_THAT(run_dsmoe("simulate " + cfg + " --gpus 12 --gpus-per-node 8").output,
              HasSubstr("--gpus 12 is not a whole number of nodes of --gpus-per-node 8"));
  EXPECT_THAT(run_dsmoe("simulate " + cfg + " --gpus 2 --routing zipf").output,
              HasSubstr("--routing 'zipf': expected uniform, zipf:S[:SEED] or a metrics.h5 file"));
  EXPECT_THAT(run_dsmoe("simulate " + cfg + " --gpus 2 --routing " + dir.file("no.h5")).output,
              HasSubstr("no.h5: cannot open"));
  EXPECT_THAT(run_dsmoe("simulate " + cfg + " --gpus 2 --compute-rate " + dir.file("no.json")).output,
              HasSubstr("no.json: cannot open the bench record"));
  EXPECT_THAT(run_dsmoe("simulate " + cfg + " --gpus 2 --overlap maybe").output, HasSubstr("--overlap: expected on or off"));
  EXPECT_THAT(run_dsmoe("simulate " + cfg + " --gpus 2 --dispatcher rack").output,
              HasSubstr("--dispatcher: expected gpu (dsmoe's) or node, got 'rack'"));
  EXPECT_THAT(run_dsmoe("simulate " + cfg + " --gpus 2 --set moe.top_k=9").output, HasSubstr("moe.top_k"));
  EXPECT_THAT(run_dsmoe("simulate --sweep " + cfg).output, HasSubstr("--sweep needs a simulation file"));
  test::RunResult r = run_dsmoe("simulate " + cfg + " --gpus 2 --bogus 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("unknown option --bogus"));
  EXPECT_EQ(run_dsmoe("simulate --help").exit_code, 0);
}

}  // namespace
}  // namespace dsmoe
