// Routing sources of the simulator: uniform, seeded Zipf, a recorded metrics.h5 (its mapping
// onto another expert count and layer count), and errors that name the spec, file or dataset.
#include <gtest/gtest.h>

#include <cmath>

#include "io/h5.h"
#include "sim/routing_source.h"
#include "test_util.h"

namespace dsmoe::sim {
namespace {

TEST(SimRouting, Uniform) {
  const RoutingProfile p = load_routing("uniform", 3, 8);
  ASSERT_EQ(p.share.size(), 3u);
  for (double x : p.share[2]) EXPECT_DOUBLE_EQ(x, 0.125);
}

TEST(SimRouting, ZipfIsSeededAndPerLayer) {
  const RoutingProfile a = load_routing("zipf:1.0", 2, 4), b = load_routing("zipf:1.0", 2, 4);
  const RoutingProfile c = load_routing("zipf:1.0:7", 2, 4);
  EXPECT_EQ(a.share, b.share);
  EXPECT_NE(a.share, c.share);
  // Shares 1, 1/2, 1/3, 1/4 over H_4 = 25/12, in some order.
  std::vector<double> s = a.share[0];
  std::sort(s.begin(), s.end());
  EXPECT_NEAR(s[3], 12.0 / 25, 1e-12);
  EXPECT_NEAR(s[0], 3.0 / 25, 1e-12);
  EXPECT_NE(a.share[0], a.share[1]);  // another permutation in the next layer
}

TEST(SimRouting, ResampleKeepsContiguousGroups) {
  // 2 source experts onto 4: each splits in halves; 4 onto 2: neighbours add up.
  EXPECT_EQ(resample_shares({0.75, 0.25}, 4), (std::vector<double>{0.375, 0.375, 0.125, 0.125}));
  EXPECT_EQ(resample_shares({0.4, 0.1, 0.3, 0.2}, 2), (std::vector<double>{0.5, 0.5}));
  // 3 onto 2: bin 0 holds expert 0 and half of expert 1.
  const std::vector<double> r = resample_shares({0.6, 0.2, 0.2}, 2);
  EXPECT_NEAR(r[0], 0.7, 1e-12);
  EXPECT_NEAR(r[1], 0.3, 1e-12);
}

void write_load(const std::string& path, const std::vector<int64_t>& dims, const std::vector<double>& v,
                const std::string& name = "experts/load") {
  h5::Handle f = h5::create_file(path);
  h5::Handle d = h5::create_dataset(f, name, H5T_IEEE_F64LE, dims);
  h5::write_rows(d, H5T_NATIVE_DOUBLE, 0, dims, v.data());
}

TEST(SimRouting, RecordedLoadsLastHalfMappedToTheTarget) {
  test::TempDir dir;
  const std::string path = dir.file("metrics.h5");
  // 4 rows, 2 layers, 2 experts; the last two rows count, summed: layer 0 (30, 10), layer 1 (20, 20).
  write_load(path, {4, 2, 2}, {100, 0, 0, 100, 1, 1, 1, 1, 10, 5, 10, 10, 20, 5, 10, 10});
  const RoutingProfile same = load_routing(path, 2, 2);
  EXPECT_EQ(same.share[0], (std::vector<double>{0.75, 0.25}));
  EXPECT_EQ(same.share[1], (std::vector<double>{0.5, 0.5}));
  // 4 target layers on 2 recorded ones: target layers 0, 1 take layer 0, layers 2, 3 layer 1; 4 experts.
  const RoutingProfile wide = load_routing(path, 4, 4);
  EXPECT_EQ(wide.share[1], (std::vector<double>{0.375, 0.375, 0.125, 0.125}));
  EXPECT_EQ(wide.share[2], (std::vector<double>{0.25, 0.25, 0.25, 0.25}));
  // Each row of the window kept for the memory model (buffers grow to the busiest step).
  ASSERT_EQ(same.row_share[0].size(), 2u);
  EXPECT_EQ(same.row_share[0][1], (std::vector<double>{0.8, 0.2}));
  // @all: every row. Layer 0 sums to (131, 11).
  const RoutingProfile all = load_routing(path + "@all", 2, 2);
  EXPECT_NEAR(all.share[0][0], 131.0 / 142, 1e-12);
  EXPECT_EQ(all.row_share[0].size(), 4u);
  EXPECT_EQ(all.row_share[0][0], (std::vector<double>{1.0, 0.0}));
}

TEST(SimRouting, ErrorsNameTheSpecFileAndDataset) {
  test::TempDir dir;
  auto err = [](const std::string& spec) { return test::error_of([&] { load_routing(spec, 2, 4); }); };
  EXPECT_NE(err("zipff:1").find("--routing 'zipff:1': expected uniform, zipf:S[:SEED] or a metrics.h5"),
            std::string::npos);
  EXPECT_NE(err("zipf:abc").find("--routing 'zipf:abc'"), std::string::npos);
  EXPECT_NE(err("zipf:-1").find("exponent"), std::string::npos);
  EXPECT_NE(err(dir.file("none.h5")).find("none.h5: cannot open"), std::string::npos);
  const std::string other = dir.file("other.h5");
  write_load(other, {2, 2}, {1, 2, 3, 4}, "train/loss");
  EXPECT_NE(err(other).find("other.h5: no dataset /experts/load"), std::string::npos);
  const std::string flat = dir.file("flat.h5");
  write_load(flat, {2, 2}, {1, 2, 3, 4});
  EXPECT_NE(err(flat).find("flat.h5: /experts/load has shape [2, 2]"), std::string::npos);
  const std::string zero = dir.file("zero.h5");
  write_load(zero, {2, 1, 2}, {0, 0, 0, 0});
  EXPECT_NE(err(zero).find("zero.h5 /experts/load layer 0: the expert loads are all zero"), std::string::npos);
}

}  // namespace
}  // namespace dsmoe::sim
