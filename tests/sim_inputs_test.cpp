// The simulator's inputs: the bench record (`dsmoe bench --json`) and simulation files, with
// errors that name the file and the key.
#include <gtest/gtest.h>

#include "config/config.h"
#include "sim/bench_record.h"
#include "sim/scenario.h"
#include "sim/simulate.h"
#include "test_util.h"

namespace dsmoe::sim {
namespace {

TEST(SimBenchRecord, RoundTripAndDerivedRates) {
  test::TempDir dir;
  const std::string path = dir.file("bench.json");
  BenchRecord r;
  r.name = "tiny \"q\"";
  r.backend = "cpu";
  r.world_size = 2;
  r.tokens_per_step = 1000;
  r.flops_per_token = 6e6;
  r.ms_compute = 500;
  r.ms_per_step = 600;
  r.a2a_bytes_per_rank = 4e6;
  r.a2a_dispatcher_ms = 2;
  r.a2a_bare_ms = 1;
  write_bench_record(path, r);
  const BenchRecord b = read_bench_record(path);
  EXPECT_EQ(b.name, "tiny \"q\"");
  EXPECT_EQ(b.world_size, 2);
  // 6e6 * 1000 / 2 ranks over the 0.5 s of compute; bytes over the dispatcher's and the bare
  // exchange's time. One rank: over the whole step (0.6 s).
  EXPECT_DOUBLE_EQ(b.compute_flops_per_rank, 6e9);
  BenchRecord one = r;
  one.world_size = 1;
  EXPECT_DOUBLE_EQ(compute_rate(one), 1e10);
  EXPECT_DOUBLE_EQ(b.a2a_dispatcher_bw, 2e9);
  EXPECT_DOUBLE_EQ(b.a2a_bare_bw, 4e9);
  double bw = 0;
  const Rates rates = rates_from(path, 0.5, &bw);
  EXPECT_DOUBLE_EQ(rates.compute, 3e9);
  EXPECT_DOUBLE_EQ(rates.dispatch_efficiency, 0.5);
  EXPECT_EQ(rates.backend, "cpu");
  EXPECT_FALSE(rates.overlap);
  EXPECT_DOUBLE_EQ(bw, 4e9);
  EXPECT_DOUBLE_EQ(rates_from("2e12", 1, &bw).compute, 2e12);
}

TEST(SimBenchRecord, Errors) {
  test::TempDir dir;
  const std::string path = dir.file("b.json");
  test::write_file(path, "{\"name\": \"x\", \"backend\": \"cpu\"}");
  EXPECT_NE(test::error_of([&] { read_bench_record(path); }).find("b.json: missing key 'world_size'"),
            std::string::npos);
  test::write_file(path, "{\"name\": \"x\" \"backend\"}");
  EXPECT_NE(test::error_of([&] { read_bench_record(path); }).find("b.json: not a flat JSON object"), std::string::npos);
  EXPECT_NE(test::error_of([&] { read_bench_record(dir.file("none.json")); }).find("none.json: cannot open"),
            std::string::npos);
  double bw;
  EXPECT_NE(test::error_of([&] { rates_from("-3", 1, &bw); }).find("--compute-rate"), std::string::npos);
}

TEST(SimScenario, ParsesEveryPart) {
  test::TempDir dir;
  const std::string path = dir.file("s.yaml");
  test::write_file(path,
                   "simulate: big\nconfig: c.yaml\nset: [train.batch_size=64]\ncompute_rate: 1e14\n"
                   "clusters:\n  - {gpus: 16, gpus_per_node: 8, inter_bw: 25e9, set: [train.micro_batches=4]}\n"
                   "  - {gpus: 8}\n"
                   "routing: [uniform, runs/exp/expert_device/metrics.h5, {name: hot, source: 'zipf:1.2'}]\n"
                   "variants: [{name: base}, {name: rd2, set: [moe.route_devices=2], dispatcher: node}]\n");
  const Scenario s = load_scenario(path);
  EXPECT_EQ(s.name, "big");
  EXPECT_EQ(s.out, "runs/big/simulate.h5");
  ASSERT_EQ(s.clusters.size(), 2u);
  EXPECT_EQ(s.clusters[0].cluster.gpus, 16);
  EXPECT_DOUBLE_EQ(s.clusters[0].cluster.inter_bw, 25e9);
  EXPECT_FALSE(s.clusters[0].intra_given);
  EXPECT_EQ(s.clusters[0].set, (std::vector<std::string>{"train.micro_batches=4"}));
  ASSERT_EQ(s.routing.size(), 3u);
  EXPECT_EQ(s.routing[1].name, "expert_device");
  EXPECT_EQ(s.routing[2].name, "hot");
  EXPECT_EQ(s.variants[1].set, (std::vector<std::string>{"moe.route_devices=2"}));
  EXPECT_FALSE(s.variants[0].node_dedup);
  EXPECT_TRUE(s.variants[1].node_dedup);
}

TEST(SimScenario, ErrorsNameFileLineAndKey) {
  test::TempDir dir;
  const std::string path = dir.file("s.yaml");
  auto err = [&](const std::string& text) {
    test::write_file(path, text);
    return test::error_of([&] { load_scenario(path); });
  };
  EXPECT_NE(err("config: c.yaml\n").find("not a simulation file"), std::string::npos);
  EXPECT_NE(err("simulate: x\nconfig: c.yaml\nclusters: [{gpus: 8}]\nroutng: [uniform]\n").find("s.yaml:4: routng: unknown key"),
            std::string::npos);
  EXPECT_NE(err("simulate: x\nconfig: c.yaml\nclusters:\n  - {gpus: 12, gpus_per_node: 8}\nrouting: [uniform]\n")
                .find("s.yaml:4: clusters[0]: --gpus 12 is not a whole number of nodes"),
            std::string::npos);
  EXPECT_NE(err("simulate: x\nconfig: c.yaml\nclusters:\n  - {gpus: many}\nrouting: [uniform]\n")
                .find("s.yaml:4: clusters[0].gpus: expected a number, got 'many'"),
            std::string::npos);
  EXPECT_NE(err("simulate: x\nconfig: c.yaml\nclusters: [{gpus: 8, speed: 3}]\nrouting: [uniform]\n")
                .find("clusters[0].speed: unknown key"),
            std::string::npos);
  EXPECT_NE(err("simulate: x\nconfig: c.yaml\nclusters: [{gpus: 8}]\n").find("routing: expected a non-empty list"),
            std::string::npos);
  EXPECT_NE(err("simulate: x\nconfig: c.yaml\nclusters: [{gpus: 8}]\nrouting: [uniform]\nvariants: [{name: a, set: [nokey]}]\n")
                .find("expected key=value, got 'nokey'"),
            std::string::npos);
  EXPECT_NE(err("simulate: x\nconfig: c.yaml\nclusters: [{gpus: 8}]\nrouting: [uniform]\nvariants:\n  - {name: a, dispatcher: rack}\n")
                .find("s.yaml:6: variants[0].dispatcher: expected gpu or node, got 'rack'"),
            std::string::npos);
}

TEST(SimScenario, ShippedFileRunsWithUniformRouting) {
  // experiments/simulate_145b.yaml: every cluster and variant resolves to a valid config; with
  // uniform routing the hierarchical dispatcher and route_devices 2 shorten the exposed all-to-all.
  const Scenario s = load_scenario(DSMOE_SOURCE_DIR "/experiments/simulate_145b.yaml");
  ASSERT_EQ(s.clusters.size(), 2u);
  for (const auto& sc : s.clusters) {
    double free_s = 0, node_rd2_s = 0;
    for (const auto& v : s.variants) {
      std::vector<std::string> set = s.set;
      set.insert(set.end(), sc.set.begin(), sc.set.end());
      set.insert(set.end(), v.set.begin(), v.set.end());
      const Config cfg = load_config(DSMOE_SOURCE_DIR "/" + s.config, set);
      validate_config(cfg, sc.cluster.gpus);
      Rates rates;
      rates.node_dedup = v.node_dedup;
      const SimResult r = simulate(cfg, sc.cluster, rates, load_routing("uniform", cfg.n_moe_layers(), cfg.moe.n_routed));
      EXPECT_GT(r.step_s(), 0) << v.name;
      if (v.name == "free") free_s = r.exposed_s();
      if (v.name == "node_dispatch_rd2") node_rd2_s = r.exposed_s();
    }
    EXPECT_LT(node_rd2_s, 0.5 * free_s) << sc.cluster.gpus << " GPUs";
  }
}

}  // namespace
}  // namespace dsmoe::sim
