// The dispatcher's layout (moe/dispatch_layout.h) without MPI, by hand values: two ranks of an
// expert-parallel group, four experts (rank 0 holds 0 and 1, rank 1 holds 2 and 3), top-2, two
// tokens each; the counts one rank would receive are the other's, written here by hand.
//   rank 0: token 0 -> experts 0, 2; token 1 -> experts 3, 2
//   rank 1: token 0 -> experts 1, 3; token 1 -> experts 0, 1
#include <gtest/gtest.h>

#include <vector>

#include "moe/dispatch_layout.h"

namespace dsmoe {
namespace {

using I32 = std::vector<int32_t>;
using I64 = std::vector<int64_t>;

const I32 kSel0 = {0, 2, 3, 2}, kSel1 = {1, 3, 0, 1};
const std::vector<uint8_t> kAllKept(4, 1);

ExpertPlacement placement(int rank) { return ExpertPlacement{4, 2, rank}; }

TEST(DispatchLayout, SendsAreSortedByExpertWithOneTokenCopyPerRank) {
  // Rank 0's pairs sorted by expert, token order within one: e0 (t0), e2 (t0, t1), e3 (t1).
  const SendLayout s = lay_out_sends(kSel0.data(), kAllKept.data(), 2, 2, placement(0));
  EXPECT_EQ(s.expert_pairs, (I64{1, 0, 2, 1}));
  EXPECT_EQ(s.expert_begin, (I64{0, 1, 1, 3, 4}));
  EXPECT_EQ(s.pair_row, (I32{0, 1, 3, 2}));
  EXPECT_EQ(s.self_begin, 0);
  EXPECT_EQ(s.self_rows, 1);  // expert 0's row stays
  // Token 1 goes to rank 1 once for its two experts there.
  EXPECT_EQ(s.copies_to, (I64{0, 2}));
  EXPECT_EQ(s.copy_token, (I32{0, 1}));
  EXPECT_EQ(s.copy_of_row, (I32{0, 1, 1}));  // rows 1..3: t0's copy, then t1's twice

  const SendLayout r1 = lay_out_sends(kSel1.data(), kAllKept.data(), 2, 2, placement(1));
  EXPECT_EQ(r1.expert_pairs, (I64{1, 2, 0, 1}));
  EXPECT_EQ(r1.copies_to, (I64{2, 0}));
  EXPECT_EQ(r1.copy_of_row, (I32{1, 0, 1}));  // e0: t1, e1: t0, t1
}

TEST(DispatchLayout, RowsAndResultsOfRankZero) {
  const SendLayout s = lay_out_sends(kSel0.data(), kAllKept.data(), 2, 2, placement(0));
  // For experts 0 and 1: this rank sends itself 1 and 0 rows, rank 1 sends 1 and 2; copies: 0, 2.
  Layout l = lay_out_rows(s, {1, 0, 1, 2}, {0, 2}, 2, 2, placement(0), kSel0.data());
  ASSERT_EQ(l.blocks.size(), 3u);  // own e0, then rank 1's e0 and e1 (an own empty block is left out)
  EXPECT_EQ(l.blocks[0].expert, 0);
  EXPECT_EQ(l.blocks[0].rows, 1);
  EXPECT_EQ(l.blocks[2].expert, 1);
  EXPECT_EQ(l.blocks[2].rows, 2);
  EXPECT_EQ(l.own_span.first_row, 0);
  EXPECT_EQ(l.received_spans[1].first_row, 1);
  EXPECT_TRUE(l.received_spans[0].blocks.empty());
  EXPECT_EQ(l.rows, 4);
  EXPECT_EQ(l.self_off, 0);
  EXPECT_EQ(l.self_token, (I32{0}));
  EXPECT_EQ(l.pair_send_count, (I64{0, 3}));
  EXPECT_EQ(l.pair_recv_count, (I64{0, 3}));
  EXPECT_EQ(l.back_rows, 3);
  // Results: the own pair's in its row; the others' come back into the tail [4, 7) in the order
  // rank 1 computed them (e2: t0, t1; e3: t1).
  EXPECT_EQ(l.pair_row, (I32{0, 4, 6, 5}));
  EXPECT_EQ(l.self_tok_off, (I32{0, 1, 1}));
  EXPECT_EQ(l.self_tok_idx, (I32{0}));
  EXPECT_EQ(l.copy_tok_off, (I32{0, 1, 2}));
  EXPECT_EQ(l.copies_received, 2);

  // Rank 1 numbered its rows' copies 1, 0, 1 (t1 for e0; t0, t1 for e1).
  lay_out_received_copies(l, {1, 0, 1});
  EXPECT_EQ(l.received_copy, (I32{1, 0, 1}));
  EXPECT_EQ(l.copy_row_off, (I32{0, 1, 3}));  // copy 0 (rank 1's t0) feeds row 2, copy 1 rows 1, 3
  EXPECT_EQ(l.copy_row_idx, (I32{2, 1, 3}));
}

TEST(DispatchLayout, ADroppedPairHasNoRow) {
  const std::vector<uint8_t> kept = {1, 0, 1, 1};  // token 0's pair with expert 2 dropped
  const SendLayout s = lay_out_sends(kSel0.data(), kept.data(), 2, 2, placement(0));
  EXPECT_EQ(s.expert_pairs, (I64{1, 0, 1, 1}));
  EXPECT_EQ(s.pair_row[1], -1);
  EXPECT_EQ(s.copy_token, (I32{1}));  // only token 1 still travels
  const Layout l = lay_out_rows(s, {1, 0, 1, 2}, {0, 2}, 2, 2, placement(0), kSel0.data());
  EXPECT_EQ(l.pair_row[1], -1);
}

TEST(DispatchLayout, OneRankKeepsEveryRowAndEveryBlock) {
  const ExpertPlacement alone{4, 1, 0};
  const SendLayout s = lay_out_sends(kSel0.data(), kAllKept.data(), 2, 2, alone);
  EXPECT_EQ(s.self_rows, 4);
  EXPECT_TRUE(s.copy_token.empty());
  const Layout l = lay_out_rows(s, s.expert_pairs, {0}, 2, 2, alone, kSel0.data());
  EXPECT_EQ(l.blocks.size(), 4u);  // one per expert, the empty one too
  EXPECT_EQ(l.back_rows, 0);
  EXPECT_EQ(l.pair_row, (I32{0, 1, 3, 2}));
  EXPECT_EQ(l.self_token, (I32{0, 0, 1, 1}));
}

}  // namespace
}  // namespace dsmoe
