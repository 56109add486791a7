// The dispatcher's layout: where every (token, expert) pair's row goes and comes back, computed
// from this rank's choices, the kept pairs, the placement of the experts and the peers' counts,
// without communication (the dispatcher exchanges the counts between the steps, then the rows).
//
// A token travels to another rank once however many of its experts live there: one token copy
// per (token, destination rank), and the receiver copies it to each of those experts' rows.
// Results come back once per pair. Pairs whose expert lives on this rank ("own" rows) never
// travel.
//   1. lay_out_sends: from this rank's routing alone, what it sends: its kept pairs sorted by
//      expert (so by destination rank), token order within an expert; its token copies; and for
//      each row it sends, which of its token copies feeds it.
//   2. lay_out_rows: with the rows each peer sends for each expert held here and the token copies
//      each peer sends, the rows this rank computes (blocks in arrival order) and where each of
//      its pairs' results lies in the combine buffer.
//   3. lay_out_received_copies: with the token-copy index each peer gave its rows, which copy
//      feeds each received row.
#pragma once
#include <cstdint>
#include <vector>

#include "moe/experts.h"
#include "moe/placement.h"

namespace dsmoe {

// Consecutive rows of the expert inputs and the expert blocks they form.
struct RowSpan {
  int first_row = 0;
  std::vector<RowBlock> blocks;
};

struct SendLayout {
  std::vector<int64_t> expert_pairs;  // [N] kept pairs per expert
  std::vector<int64_t> expert_begin;  // [N + 1] first row of each expert in the sorted order
  std::vector<int32_t> pair_row;      // [pairs] the pair's row in the sorted order, -1 dropped
  std::vector<int32_t> row_token;     // [kept pairs] each sorted row's token
  int self_begin = 0, self_rows = 0;  // the own rows within the sorted order
  std::vector<int64_t> copies_to;     // [E] token copies sent to each rank (0 to this one)
  std::vector<int32_t> copy_token;    // the token copies, by destination rank then token
  std::vector<int32_t> copy_of_row;   // each row sent to another rank, in sorted order: its copy's index in its message
};

SendLayout lay_out_sends(const int32_t* sel, const uint8_t* kept, int tokens, int k, const ExpertPlacement& placement);

struct Layout {
  // The rows this rank computes, as they arrive: from each source rank in order, its rows for
  // each local expert (so an expert's rows are in global token order across its blocks).
  std::vector<RowBlock> blocks;
  RowSpan own_span;                   // this rank's own rows
  std::vector<RowSpan> received_spans;  // the received ones before and after them
  int rows = 0;       // rows this rank computes
  int back_rows = 0;  // results of this rank's pairs that other ranks computed
  int self_off = 0, self_rows = 0;  // the own rows: [self_off, self_off + self_rows)
  std::vector<int32_t> self_token;  // [self_rows] the token of each own row
  // Pair rows per rank: sent (this rank's pairs, computed there) and received (computed here);
  // where they lie in the expert inputs (recv) and in the combine buffer's tail (back).
  std::vector<int64_t> pair_send_count, pair_recv_count, pair_recv_off, pair_back_off;
  // [pairs]: the combine buffer row of each pair's result, -1 if dropped.
  std::vector<int32_t> pair_row;
  // Each token's own rows, ascending (CSR over tokens).
  std::vector<int32_t> self_tok_off, self_tok_idx;
  // Token copies per rank, sent and received, and where they lie in their buffers.
  std::vector<int64_t> copy_send_count, copy_recv_count, copy_send_off, copy_recv_off;
  int copies_sent = 0, copies_received = 0;
  std::vector<int32_t> copy_token;  // the copies sent, by destination rank then token (SendLayout's)
  // Each token's copies sent (CSR over tokens: their indices in the send buffer).
  std::vector<int32_t> copy_tok_off, copy_tok_idx;
  // The received rows of the expert inputs, in order (the rows before the own block, then after
  // it): the received copy each one is; and each received copy's rows (CSR over copies).
  std::vector<int32_t> received_copy, copy_row_off, copy_row_idx;
};

// rows_from [E * per]: the rows each rank sends for each expert held here (this rank's own
// included); copies_from [E]: the token copies each rank sends here.
Layout lay_out_rows(const SendLayout& sends, const std::vector<int64_t>& rows_from,
                    const std::vector<int64_t>& copies_from, int tokens, int k, const ExpertPlacement& placement,
                    const int32_t* sel);

// copy_of_received_row: for every received row, in arrival order, the index of its token copy
// within the message of the rank that sent it (what that rank's copy_of_row said).
void lay_out_received_copies(Layout& layout, std::vector<int32_t> copy_of_received_row);

}  // namespace dsmoe
