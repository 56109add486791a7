// The counting sort of the dispatcher's plan (routing/sort_pairs.h) against std::stable_sort, over
// several chunks and with dropped pairs; and the CPU backend's sort_pairs op (every pair kept),
// with each token's rows.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "backend/cpu_backend.h"
#include "routing/sort_pairs.h"
#include "util/rng.h"

namespace dsmoe {
namespace {

constexpr int kN = 37, kK = 3, kTokens = 700;  // 2,100 pairs: five chunks of 512
constexpr int64_t kPairs = (int64_t)kTokens * kK;

std::vector<int32_t> random_choices(uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> sel(kPairs);
  for (auto& e : sel) e = static_cast<int32_t>(rng.below(kN - 5));  // the last five experts get none
  return sel;
}

// The kept pairs' indices, stably sorted by expert.
std::vector<int32_t> reference_order(const std::vector<int32_t>& sel, const std::vector<uint8_t>& kept) {
  std::vector<int32_t> order;
  for (int32_t p = 0; p < kPairs; ++p)
    if (kept[p]) order.push_back(p);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return sel[a] < sel[b]; });
  return order;
}

TEST(SortPairs, StableByExpertWithDroppedPairs) {
  const std::vector<int32_t> sel = random_choices(7);
  Rng rng(8);
  std::vector<uint8_t> kept(kPairs);
  for (auto& x : kept) x = rng.uniform() < 0.8;
  const std::vector<int32_t> order = reference_order(sel, kept);
  std::vector<int32_t> counts(kN, -1), pos(kPairs, -7), row_token(kPairs, -7), hist((size_t)sort_chunks(kPairs) * kN);
  sort_pairs_on_host(sel.data(), kept.data(), kPairs, kK, kN, counts.data(), pos.data(), row_token.data(), hist.data());
  for (size_t r = 0; r < order.size(); ++r) {
    EXPECT_EQ(pos[order[r]], static_cast<int32_t>(r)) << "pair " << order[r];
    EXPECT_EQ(row_token[r], order[r] / kK) << "row " << r;
  }
  for (int64_t p = 0; p < kPairs; ++p) {
    if (!kept[p]) {
      EXPECT_EQ(pos[p], -1) << "dropped pair " << p;
    }
  }
  for (int e = 0; e < kN; ++e) {
    int32_t want = 0;
    for (int64_t p = 0; p < kPairs; ++p) want += kept[p] && sel[p] == e;
    EXPECT_EQ(counts[e], want) << "expert " << e;
  }
}

TEST(SortPairs, BackendOpListsEachTokensRows) {
  const std::vector<int32_t> sel = random_choices(9);
  const std::vector<int32_t> order = reference_order(sel, std::vector<uint8_t>(kPairs, 1));
  auto be = make_cpu_backend<float>();
  Buf<int32_t> s(*be, kPairs), counts(*be, kN), pos(*be, kPairs), row_token(*be, kPairs), rows(*be, kPairs),
      hist(*be, (int64_t)sort_chunks(kPairs) * kN);
  to_device(*be, s.data(), sel);
  be->sort_pairs(counts, pos, row_token, rows, hist, s, kTokens, kK, kN);
  const std::vector<int32_t> p = to_host(*be, pos.data(), kPairs), tr = to_host(*be, rows.data(), kPairs);
  for (size_t r = 0; r < order.size(); ++r) ASSERT_EQ(p[order[r]], static_cast<int32_t>(r));
  for (int t = 0; t < kTokens; ++t) {
    std::vector<int32_t> want(p.begin() + t * kK, p.begin() + (t + 1) * kK);
    std::sort(want.begin(), want.end());
    EXPECT_EQ(std::vector<int32_t>(tr.begin() + t * kK, tr.begin() + (t + 1) * kK), want) << "token " << t;
  }
}

}  // namespace
}  // namespace dsmoe
