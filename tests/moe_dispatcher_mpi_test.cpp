// The dispatcher across the ranks of an expert-parallel group, with rank-stamped payloads:
// x[t] of rank r is stamp(r, t), so every received row says where it came from. The rows the
// experts read and write are stored as the backend stores activations: in bf16 too (the rows
// then travel in bf16), where stamps of up to 8 significant bits stay exact.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <vector>

#include "backend/cpu_backend.h"
#include "backend/cuda_loader.h"
#include "backend/select.h"
#include "comm/groups.h"
#include "moe/dispatcher.h"
#include "mpi_test_env.h"
#include "util/bf16.h"
#include "util/rng.h"

namespace dsmoe {
namespace {

constexpr int kD = 3;
double stamp(int rank, int t) { return 16.0 * rank + t + 1; }
double column(int c) { return 0.5 * c; }  // x[t][c] = stamp + column(c)
double gate_stamp(int rank, int p) { return 0.25 * (256 * rank + p + 1); }  // the gate of pair p

// n values of an activation buffer as T, and v written into one, in the backend's storage.
template <typename T>
std::vector<T> read_stored(Backend<T>& be, ActBuf<T>& b, int64_t n) {
  if (!be.bf16_storage()) return to_host(be, b.ptr().get(), n);
  const std::vector<uint16_t> bits = to_host(be, static_cast<const uint16_t*>(b.ptr().raw()), n);
  std::vector<T> v(bits.size());
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<T>(bf16_value(bits[i]));
  return v;
}
template <typename T>
void write_stored(Backend<T>& be, ActBuf<T>& b, const std::vector<T>& v) {
  if (!be.bf16_storage()) return to_device(be, b.ptr().get(), v);
  std::vector<uint16_t> bits(v.size());
  for (size_t i = 0; i < v.size(); ++i) bits[i] = bf16_bits(static_cast<float>(v[i]));
  to_device(be, static_cast<uint16_t*>(b.ptr().raw()), bits);
}

struct Plan {
  int tokens = 0, k = 0;
  std::vector<int32_t> sel;
  std::vector<uint8_t> kept;
};

using PlanFn = std::function<Plan(int rank)>;

Plan random_plan(int rank, int n_experts, int k, uint64_t seed, int tokens = 4) {
  Rng rng(hash_key(seed, rank));
  Plan p;
  p.tokens = tokens + rank % 3;
  p.k = k;
  for (int t = 0; t < p.tokens; ++t) {
    std::vector<int> experts(n_experts);
    for (int e = 0; e < n_experts; ++e) experts[e] = e;
    for (int i = 0; i < k; ++i) {  // k distinct experts
      std::swap(experts[i], experts[i + rng.below(n_experts - i)]);
      p.sel.push_back(experts[i]);
      p.kept.push_back(rng.uniform() < 0.8);
    }
  }
  return p;
}

// Dispatch, combine and both backwards on this rank's plan, checked against what every rank
// of the group sends (each rank can rebuild every plan). On the CPU backend in double over
// MPI, or on the CUDA backend over NCCL (stamps are exact in float). local: planned by
// plan_local from the choices in backend memory (a group of one rank, every pair kept).
template <typename T>
void check_round_trip(Backend<T>& be, int n_experts, int expert_parallel, const PlanFn& plan_of,
                      bool local = false) {
  using Vec = std::vector<T>;
  Comm& world = test::world();
  ProcessGroups groups(world, expert_parallel);
  if (be.name() == "cuda") groups.ep = make_nccl_comm(std::move(groups.ep));
  Comm& ep = *groups.ep;
  const int group_first_rank = world.rank() - ep.rank();
  ExpertPlacement placement{n_experts, ep.size(), ep.rank()};
  Dispatcher<T> disp(be, ep, placement, kD);

  const Plan mine = plan_of(world.rank());
  const int P = mine.tokens * mine.k;
  if (local) {
    Buf<int32_t> sel(be, P);
    to_device(be, sel.data(), mine.sel);
    disp.plan_local(sel, mine.tokens, mine.k);
  } else {
    disp.plan(mine.sel, mine.kept, mine.tokens, mine.k);
  }

  // Expected rows: from each source rank in order, its tokens for each local expert in order.
  Vec expected, expected_gates;
  std::vector<int> expected_blocks, blocks;  // (expert, rows) flattened
  int64_t tokens_received = 0;  // tokens of other ranks with a kept pair here: each arrives once
  auto is_local = [&](int32_t e) { return e >= placement.first() && e < placement.first() + placement.per_rank(); };
  for (int src = 0; src < ep.size(); ++src) {
    const Plan p = plan_of(group_first_rank + src);
    for (int t = 0; t < p.tokens && src != ep.rank(); ++t) {
      bool here = false;
      for (int s = 0; s < p.k; ++s) here = here || (p.kept[t * p.k + s] && is_local(p.sel[t * p.k + s]));
      tokens_received += here;
    }
    for (int j = 0; j < placement.per_rank(); ++j) {
      int rows = 0;
      for (int t = 0; t < p.tokens; ++t)
        for (int s = 0; s < p.k; ++s)
          if (p.sel[t * p.k + s] == placement.first() + j && p.kept[t * p.k + s]) {
            expected.push_back(stamp(group_first_rank + src, t));
            expected_gates.push_back(gate_stamp(group_first_rank + src, t * p.k + s));
            rows++;
          }
      if (rows > 0 || ep.size() == 1) expected_blocks.insert(expected_blocks.end(), {j, rows});
    }
  }
  for (const RowBlock& b : disp.blocks()) blocks.insert(blocks.end(), {b.expert, b.rows});
  EXPECT_EQ(blocks, expected_blocks);
  const int R = disp.rows();
  EXPECT_EQ(R, static_cast<int>(expected.size()));
  EXPECT_EQ(disp.stats().expert_rows, static_cast<int64_t>(expected.size()));
  EXPECT_EQ(disp.stats().tokens_received, tokens_received);

  auto as_stored = [&](double v) { return be.bf16_storage() ? (T)bf16_value(bf16_bits((float)v)) : (T)v; };
  Vec x((size_t)mine.tokens * kD);
  for (int t = 0; t < mine.tokens; ++t)
    for (int c = 0; c < kD; ++c) x[(size_t)t * kD + c] = stamp(world.rank(), t) + column(c);
  Buf<T> xb(be, std::max<int64_t>(1, x.size()));
  ActBuf<T> xe;
  xe.ensure(be, std::max(1, R * kD));
  to_device(be, xb.data(), x);
  disp.dispatch(xe, xb);
  Vec xeh = read_stored(be, xe, (int64_t)R * kD);
  for (int r = 0; r < R && r < (int)expected.size(); ++r)
    for (int c = 0; c < kD; ++c)
      EXPECT_EQ(xeh[(size_t)r * kD + c], as_stored(expected[r] + column(c))) << "row " << r;
  // The backward's rebuild of the rows (no exchange) gives them again.
  ActBuf<T> again;
  again.ensure(be, std::max(1, R * kD));
  disp.redispatch(again, xb);
  EXPECT_EQ(read_stored(be, again, (int64_t)R * kD), xeh);

  // The gates go to the rows that compute their pairs; "experts" return twice the gate as its
  // gradient, which comes back to the pair (0 for a dropped pair).
  const int C = disp.combine_rows();
  Vec gate(std::max(1, P));
  for (int p = 0; p < P; ++p) gate[p] = gate_stamp(world.rank(), p);
  Buf<T> gateb(be, gate.size()), row_gate(be, std::max(1, C)), dgate(be, gate.size());
  to_device(be, gateb.data(), gate);
  disp.dispatch_gates(row_gate, gateb);
  Vec row_gates = to_host(be, row_gate.data(), std::max(1, C));
  EXPECT_EQ(Vec(row_gates.begin(), row_gates.begin() + R), expected_gates);
  for (int r = 0; r < R; ++r) row_gates[r] *= 2;
  for (int r = R; r < C; ++r) row_gates[r] = -1;
  to_device(be, row_gate.data(), row_gates);
  disp.combine_gate_grads(dgate, row_gate);
  const Vec dgates = to_host(be, dgate.data(), P);
  for (int p = 0; p < P; ++p) EXPECT_EQ(dgates[p], mine.kept[p] ? 2 * gate[p] : 0) << "pair " << p;

  // "Experts" scale their rows by (global expert + 2); after combine, the combine buffer holds
  // every kept pair's result at pair_row(p), and no two pairs share a row (the other rows hold
  // the results of other ranks' pairs computed here).
  Vec yc((size_t)C * kD, -1.0);
  int r = 0;
  for (const RowBlock& b : disp.blocks())
    for (int i = 0; i < b.rows; ++i, ++r)
      for (int c = 0; c < kD; ++c) yc[(size_t)r * kD + c] = xeh[(size_t)r * kD + c] * (placement.first() + b.expert + 2);
  ActBuf<T> ycb;
  ycb.ensure(be, std::max(1, C * kD));
  write_stored(be, ycb, yc);
  disp.combine(ycb);
  Vec ych = read_stored(be, ycb, (int64_t)C * kD);
  const std::vector<int32_t> pair_row = to_host(be, disp.pair_row(), P);
  std::vector<int> uses(C + 1, 0);
  for (int p = 0; p < P; ++p) {
    ASSERT_EQ(pair_row[p] >= 0, mine.kept[p] != 0) << "pair " << p;
    if (pair_row[p] < 0) continue;
    ASSERT_LT(pair_row[p], C);
    uses[pair_row[p]]++;
    for (int c = 0; c < kD; ++c)
      EXPECT_EQ(ych[(size_t)pair_row[p] * kD + c], as_stored(as_stored(x[(size_t)(p / mine.k) * kD + c]) * (mine.sel[p] + 2)))
          << "pair " << p;
  }
  EXPECT_LE(*std::max_element(uses.begin(), uses.end()), 1) << "two pairs share a row of the combine buffer";

  // Backward of combine sends pair gradients to the expert rows (the same route as dispatch).
  Vec dyc((size_t)C * kD, -1.0);
  for (int p = 0; p < P; ++p)
    if (pair_row[p] >= 0)
      for (int c = 0; c < kD; ++c) dyc[(size_t)pair_row[p] * kD + c] = x[(size_t)(p / mine.k) * kD + c];
  ActBuf<T> dycb;
  dycb.ensure(be, std::max(1, C * kD));
  write_stored(be, dycb, dyc);
  disp.combine_backward(dycb);
  EXPECT_EQ(read_stored(be, dycb, (int64_t)R * kD), xeh);

  // Backward of dispatch (rows in T): each token gets the sum over its kept pairs (written over
  // what dx held).
  Buf<T> dx(be, std::max<int64_t>(1, x.size())), dxe(be, std::max(1, R * kD));
  to_device(be, dx.data(), Vec(std::max<size_t>(1, x.size()), T(-7)));
  if (R > 0) to_device(be, dxe.data(), xeh);
  disp.dispatch_backward(dx, dxe);
  Vec dxh = to_host(be, dx.data(), (int64_t)x.size());
  for (int t = 0; t < mine.tokens; ++t) {
    int kept = 0;
    for (int s = 0; s < mine.k; ++s) kept += mine.kept[t * mine.k + s];
    for (int c = 0; c < kD; ++c)
      EXPECT_EQ(dxh[(size_t)t * kD + c], kept * as_stored(x[(size_t)t * kD + c])) << "token " << t;
  }
}

// Each test runs on the CPU backend (double) over MPI, on the CPU backend in float with bf16
// storage over MPI, and on the CUDA backend (float) over NCCL where every rank has a GPU of its own.
class DispatcherMpi : public ::testing::TestWithParam<std::string> {
 protected:
  template <typename Check>
  void on_backend(Check&& check) {
    if (GetParam() == "cpu") {
      auto be = make_cpu_backend<double>();
      return check(*be);
    }
    if (GetParam() == "cpu_bf16") {
      auto be = make_cpu_backend<float>(/*bf16_storage=*/true);
      return check(*be);
    }
    if (cuda_device_count() < test::world().size())
      GTEST_SKIP() << "needs a GPU per rank: " << cuda_device_count() << " GPU(s) for " << test::world().size()
                   << " ranks";
    auto be = make_backend("cuda", test::world());
    check(*be);
  }
};

TEST_P(DispatcherMpi, RandomRoutingEveryExpertParallelSize) {
  on_backend([](auto& be) {
    const int R = test::world().size();
    for (int E = 1; E <= R; ++E) {
      if (R % E) continue;
      SCOPED_TRACE("expert_parallel " + std::to_string(E));
      check_round_trip(be, 8, E, [](int rank) { return random_plan(rank, 8, 2, 17); });
    }
  });
}

// The plan where the choices are: several chunks of the counting sort (routing/sort_pairs.h), and
// experts with no rows.
TEST_P(DispatcherMpi, PlanLocalMatchesWhatTheRanksSend) {
  on_backend([](auto& be) {
    check_round_trip(be, 40, 1, [](int rank) {
      Plan p = random_plan(rank, 30, 3, 23, 700);
      p.kept.assign(p.sel.size(), 1);
      return p;
    }, true);
  });
}

TEST_P(DispatcherMpi, AllTokensToOneExpertLeaveOtherRanksEmpty) {
  on_backend([](auto& be) {
    check_round_trip(be, 4 * test::world().size(), 0, [](int rank) {
      Plan p;
      p.tokens = 3 + rank;
      p.k = 1;
      p.sel.assign(p.tokens, 0);
      p.kept.assign(p.tokens, 1);
      return p;
    });
  });
}

TEST_P(DispatcherMpi, TokensWhosePairsAreAllDropped) {
  on_backend([](auto& be) {
    check_round_trip(be, 4, 0, [](int rank) {
      Plan p = random_plan(rank, 4, 2, 5);
      for (int s = 0; s < p.k; ++s) p.kept[s] = 0;  // token 0 loses every pair
      return p;
    });
  });
}

INSTANTIATE_TEST_SUITE_P(Backends, DispatcherMpi, ::testing::Values("cpu", "cpu_bf16", "cuda"));

}  // namespace
}  // namespace dsmoe
