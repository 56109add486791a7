#include "moe/dispatch_layout.h"

#include <numeric>

#include "comm/comm.h"
#include "routing/sort_pairs.h"
#include "util/check.h"

namespace dsmoe {
namespace {

// CSR (offsets, indices) of `groups` lists from the group of each item, items in order; an
// item's index is its position plus `shift` past position `from`.
void build_csr(const std::vector<int32_t>& group_of, int groups, std::vector<int32_t>* off, std::vector<int32_t>* idx,
               int32_t from = 0, int32_t shift = 0) {
  off->assign(groups + 1, 0);
  for (int32_t g : group_of) (*off)[g + 1]++;
  for (int g = 0; g < groups; ++g) (*off)[g + 1] += (*off)[g];
  std::vector<int32_t> next(off->begin(), off->end() - 1);
  idx->resize(group_of.size());
  for (size_t i = 0; i < group_of.size(); ++i) {
    const int32_t at = static_cast<int32_t>(i);
    (*idx)[next[group_of[i]]++] = at >= from ? at + shift : at;
  }
}

int64_t sum(const std::vector<int64_t>& v) { return std::accumulate(v.begin(), v.end(), int64_t{0}); }

}  // namespace

SendLayout lay_out_sends(const int32_t* sel, const uint8_t* kept, int tokens, int k, const ExpertPlacement& placement) {
  const int N = placement.n_experts, E = placement.ep_size, per = placement.per_rank(), me = placement.ep_rank;
  const int64_t pairs = (int64_t)tokens * k;
  SendLayout s;
  std::vector<int32_t> count(N), hist((size_t)sort_chunks(pairs) * N);
  s.pair_row.resize(pairs);
  s.row_token.resize(pairs);
  sort_pairs_on_host(sel, kept, pairs, k, N, count.data(), s.pair_row.data(), s.row_token.data(), hist.data());
  s.expert_pairs.assign(count.begin(), count.end());
  s.expert_begin.assign(N + 1, 0);
  for (int e = 0; e < N; ++e) s.expert_begin[e + 1] = s.expert_begin[e] + count[e];
  const auto rank_begin = [&](int rank) { return s.expert_begin[rank * per]; };
  s.self_begin = static_cast<int>(rank_begin(me));
  s.self_rows = static_cast<int>(rank_begin(me + 1) - s.self_begin);

  // Token copies: one per (token, other rank) with a kept pair there, by rank then token.
  std::vector<std::vector<int32_t>> copies(E);
  std::vector<int32_t> last_token(E, -1), copy_of_pair(pairs, -1);  // its copy's index within its message
  for (int64_t p = 0; p < pairs && E > 1; ++p) {
    const int dest = kept[p] ? placement.owner(sel[p]) : me;
    if (dest == me) continue;
    const int t = static_cast<int>(p / k);
    if (last_token[dest] != t) {
      last_token[dest] = t;
      copies[dest].push_back(t);
    }
    copy_of_pair[p] = static_cast<int32_t>(copies[dest].size() - 1);
  }
  s.copies_to.assign(E, 0);
  for (int r = 0; r < E; ++r) {
    s.copies_to[r] = static_cast<int64_t>(copies[r].size());
    s.copy_token.insert(s.copy_token.end(), copies[r].begin(), copies[r].end());
  }
  // For every row sent, in sorted order, its copy's index, so that the receiver knows which copy
  // feeds which expert row.
  std::vector<int32_t> pair_of_row(s.expert_begin[N]);
  for (int64_t p = 0; p < pairs; ++p)
    if (s.pair_row[p] >= 0) pair_of_row[s.pair_row[p]] = static_cast<int32_t>(p);
  for (int64_t r = 0; r < s.expert_begin[N]; ++r)
    if (r < s.self_begin || r >= s.self_begin + s.self_rows) s.copy_of_row.push_back(copy_of_pair[pair_of_row[r]]);
  return s;
}

Layout lay_out_rows(const SendLayout& s, const std::vector<int64_t>& rows_from, const std::vector<int64_t>& copies_from,
                    int tokens, int k, const ExpertPlacement& placement, const int32_t* sel) {
  const int E = placement.ep_size, per = placement.per_rank(), me = placement.ep_rank;
  const int64_t pairs = (int64_t)tokens * k;
  Layout l;
  l.copy_send_count = s.copies_to;
  l.copy_recv_count = copies_from;
  l.copy_token = s.copy_token;
  l.copies_sent = static_cast<int>(s.copy_token.size());
  l.copies_received = static_cast<int>(sum(copies_from));
  l.copy_send_off = packed_offsets(l.copy_send_count);
  l.copy_recv_off = packed_offsets(l.copy_recv_count);

  // The blocks, from each source rank in order; a rank's rows for an expert held here form a
  // block (with one rank every expert has one, empty or not).
  l.received_spans.assign(2, RowSpan{});
  l.pair_send_count.assign(E, 0);
  l.pair_recv_count.assign(E, 0);
  int row = 0;
  for (int r = 0; r < E; ++r) {
    RowSpan& span = r == me ? l.own_span : l.received_spans[r < me ? 0 : 1];
    if (span.blocks.empty()) span.first_row = row;
    for (int j = 0; j < per; ++j) {
      l.pair_send_count[r] += s.expert_pairs[r * per + j];
      l.pair_recv_count[r] += rows_from[r * per + j];
      if (rows_from[r * per + j] > 0 || E == 1) {
        const RowBlock block{j, static_cast<int>(rows_from[r * per + j])};
        l.blocks.push_back(block);
        span.blocks.push_back(block);
        row += block.rows;
      }
    }
  }
  l.rows = static_cast<int>(sum(l.pair_recv_count));
  l.pair_recv_off = packed_offsets(l.pair_recv_count);
  l.self_off = static_cast<int>(l.pair_recv_off[me]);
  l.self_rows = s.self_rows;
  DSMOE_ASSERT(l.pair_recv_count[me] == s.self_rows);
  l.pair_send_count[me] = l.pair_recv_count[me] = 0;  // the own pairs stay here
  l.back_rows = static_cast<int>(sum(l.pair_send_count));
  l.pair_back_off = packed_offsets(l.pair_send_count);
  l.self_token.assign(s.row_token.begin() + s.self_begin, s.row_token.begin() + s.self_begin + s.self_rows);

  const auto rank_begin = [&](int rank) { return s.expert_begin[rank * per]; };
  l.pair_row.assign(pairs, -1);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < pairs; ++p) {
    if (s.pair_row[p] < 0) continue;
    const int dest = placement.owner(sel[p]);
    const int64_t in_block = s.pair_row[p] - rank_begin(dest);
    l.pair_row[p] =
        static_cast<int32_t>(dest == me ? l.self_off + in_block : l.rows + l.pair_back_off[dest] + in_block);
  }
  // Each token's own rows, ascending: its own pairs' rows, sorted.
  l.self_tok_off.assign(tokens + 1, 0);
  l.self_tok_idx.resize(s.self_rows);
  const auto own_pair = [&](int64_t p) { return s.pair_row[p] >= 0 && placement.owner(sel[p]) == me; };
#pragma omp parallel for schedule(static)
  for (int t = 0; t < tokens; ++t)
    for (int j = 0; j < k; ++j) l.self_tok_off[t + 1] += own_pair((int64_t)t * k + j);
  for (int t = 0; t < tokens; ++t) l.self_tok_off[t + 1] += l.self_tok_off[t];
#pragma omp parallel for schedule(static)
  for (int t = 0; t < tokens; ++t) {
    int32_t* rows = l.self_tok_idx.data() + l.self_tok_off[t];  // (no element when the token has no own row)
    int n = 0;
    for (int j = 0; j < k; ++j) {
      const int64_t p = (int64_t)t * k + j;
      if (!own_pair(p)) continue;
      int at = n++;
      for (; at > 0 && rows[at - 1] > l.pair_row[p]; --at) rows[at] = rows[at - 1];
      rows[at] = l.pair_row[p];
    }
  }
  if (E > 1) build_csr(s.copy_token, tokens, &l.copy_tok_off, &l.copy_tok_idx);
  return l;
}

void lay_out_received_copies(Layout& l, std::vector<int32_t> copy_of_received_row) {
  DSMOE_ASSERT(static_cast<int64_t>(copy_of_received_row.size()) == l.rows - l.self_rows);
  // The senders numbered their copies within their own messages: add where each message starts.
  int64_t i = 0, base = 0;
  for (size_t r = 0; r < l.pair_recv_count.size(); ++r) {
    for (int64_t n = 0; n < l.pair_recv_count[r]; ++n, ++i) copy_of_received_row[i] += static_cast<int32_t>(base);
    base += l.copy_recv_count[r];
  }
  l.received_copy = std::move(copy_of_received_row);
  build_csr(l.received_copy, l.copies_received, &l.copy_row_off, &l.copy_row_idx, l.self_off, l.self_rows);
}

}  // namespace dsmoe
