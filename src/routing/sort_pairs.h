// A rank's (token, expert) pairs sorted by expert, token order within an expert: the order in
// which the routed experts compute their rows (the dispatcher's plan). A stable counting sort in
// chunks of pairs: each chunk counts its pairs per expert, the counts become the row where each
// chunk's pairs of each expert start (expert-major, chunk-minor), and each chunk places its pairs
// from there. The host runs the code below; the GPU the same steps with a warp per chunk
// (kernels/sort_pairs.cu). A stable sort has one result, so neither the chunking nor the way a
// chunk is walked changes anything but the speed.
#pragma once
#include <cstdint>

#include "routing/route_row.h"

namespace dsmoe {

constexpr int kSortChunk = 512;  // pairs per chunk
DSMOE_HOST_DEVICE inline int sort_chunks(int64_t pairs) { return static_cast<int>((pairs + kSortChunk - 1) / kSortChunk); }

// The first pair of chunk c, and the end of its pairs.
DSMOE_HOST_DEVICE inline int64_t chunk_begin(int c) { return (int64_t)c * kSortChunk; }
DSMOE_HOST_DEVICE inline int64_t chunk_end(int c, int64_t pairs) {
  return chunk_begin(c) + kSortChunk < pairs ? chunk_begin(c) + kSortChunk : pairs;
}

// counts[e] += the kept pairs of expert e in chunk c of `pairs` (kept null: all).
inline void count_chunk(const int32_t* sel, const uint8_t* kept, int64_t pairs, int c, int32_t* counts) {
  for (int64_t p = chunk_begin(c); p < chunk_end(c, pairs); ++p)
    if (!kept || kept[p]) counts[sel[p]]++;
}

// hist [chunks, N] counts -> in column e, the row where chunk c's pairs of expert e start,
// counting from `start`; returns the column's total.
inline int32_t column_starts(int32_t* hist, int chunks, int n_experts, int e, int32_t start) {
  const int32_t first = start;
  for (int c = 0; c < chunks; ++c) {
    const int32_t n = hist[(int64_t)c * n_experts + e];
    hist[(int64_t)c * n_experts + e] = start;
    start += n;
  }
  return start - first;
}

// Places the kept pairs of chunk c from next[e] on: pos[p] its row (-1 if dropped), row_token
// [row] its token.
inline void place_chunk(const int32_t* sel, const uint8_t* kept, int64_t pairs, int c, int k, int32_t* next,
                        int32_t* pos, int32_t* row_token) {
  for (int64_t p = chunk_begin(c); p < chunk_end(c, pairs); ++p) {
    if (kept && !kept[p]) {
      pos[p] = -1;
      continue;
    }
    const int32_t r = next[sel[p]]++;
    pos[p] = r;
    row_token[r] = static_cast<int32_t>(p / k);
  }
}

// Token t's rows (every pair kept), ascending: rows [k].
DSMOE_HOST_DEVICE inline void token_rows(const int32_t* pos, int t, int k, int32_t* rows) {
  for (int j = 0; j < k; ++j) {
    const int32_t r = pos[(int64_t)t * k + j];
    int at = j;
    for (; at > 0 && rows[at - 1] > r; --at) rows[at] = rows[at - 1];
    rows[at] = r;
  }
}

#ifndef __CUDACC__
// The sort on host threads: sel, kept [pairs] -> counts [N], pos [pairs], row_token [kept pairs];
// hist: scratch [sort_chunks(pairs), N], zeroed here.
inline void sort_pairs_on_host(const int32_t* sel, const uint8_t* kept, int64_t pairs, int k, int n_experts,
                               int32_t* counts, int32_t* pos, int32_t* row_token, int32_t* hist) {
  const int chunks = sort_chunks(pairs);
#pragma omp parallel for schedule(static)
  for (int c = 0; c < chunks; ++c) {
    int32_t* h = hist + (int64_t)c * n_experts;
    for (int e = 0; e < n_experts; ++e) h[e] = 0;
    count_chunk(sel, kept, pairs, c, h);
  }
  int32_t start = 0;
  for (int e = 0; e < n_experts; ++e) start += counts[e] = column_starts(hist, chunks, n_experts, e, start);
#pragma omp parallel for schedule(static)
  for (int c = 0; c < chunks; ++c)
    place_chunk(sel, kept, pairs, c, k, hist + (int64_t)c * n_experts, pos, row_token);
}
#endif

}  // namespace dsmoe
