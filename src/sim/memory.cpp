#include "sim/memory.h"

#include <algorithm>
#include <cmath>

#include "model/layout.h"
#include "moe/placement.h"
#include "params/optimizer_shard.h"
#include "routing/route_stats.h"
#include "util/check.h"

namespace dsmoe::sim {
namespace {

// A Buf created with `initial` elements and later ensure()d to `need` (backend.h: a buffer that
// grows takes a quarter more than its old size when that is more than asked).
double grown(double initial, double need) {
  return need <= initial ? initial : std::max(need, initial + initial / 4);
}

}  // namespace

MemoryBreakdown rank_memory(const Config& cfg, int ep, int ep_rank, int replicas, int seqs, const std::string& backend,
                            const RankRows& rr) {
  const auto& m = cfg.model;
  const auto& moe = cfg.moe;
  DSMOE_CHECK(backend == "cpu" || backend == "cuda", "memory model: backend must be cpu or cuda, got '", backend, "'");
  DSMOE_CHECK(ep >= 1 && moe.n_routed % ep == 0, "n_routed ", moe.n_routed, " is not divisible by the expert-parallel size ", ep);
  const ExpertPlacement placement{moe.n_routed, ep, ep_rank};
  const ParamTable table = build_param_table(cfg, placement.first(), placement.per_rank());
  const double P = static_cast<double>(table.size());
  const OptimizerShard shard = cfg.parallel.shard_optimizer
                                   ? shard_over_replicas(table.sharded_begin(), table.size(), ep_rank, ep * replicas, 0,
                                                         replicas)
                                   : whole_buffer(table.size());
  const double f = 4;  // bytes per element: fp32 tensors, int32 indices
  const double R = (double)seqs * m.seq_len, d = m.d_model, V = m.vocab_size, dh = m.dense_hidden;
  const double N = moe.n_routed, K = moe.top_k, n = moe.expert_hidden, sh = (double)moe.n_shared * n;
  const double pairs = R * K, sh_rows = sh > 0 ? R : 0;
  const double att = backend == "cpu" ? (double)seqs * m.n_heads * m.seq_len * m.seq_len
                                      : (double)seqs * m.n_heads * m.seq_len;
  const int Lm = cfg.n_moe_layers(), Ld = m.n_layers - Lm;
  DSMOE_CHECK(rr.rows.empty() || static_cast<int>(rr.rows.size()) == Lm, "internal: rows for ", rr.rows.size(),
              " MoE layers, config has ", Lm);

  // The buffers the model stores as activations (ActBuf) take half the bytes under bf16 storage.
  const bool bf16 = backend == "cuda" && cfg.precision == "bf16";
  const double low = bf16 ? 0.5 : 1.0;

  MemoryBreakdown mb;
  mb.weights = mb.grads = P * f;
  mb.optimizer = 2 * static_cast<double>(shard.state_size) * f;
  // x h, rstd x2 per layer; qkv att and the attention's saved tensor per layer, or one set with
  // train.recompute attention or full; the dense FFN's gu and act; the norms' outputs ln1 ln2
  // (one pair, recomputed by the backward)
  const int attention_sets = cfg.train.recomputes_attention() ? 1 : m.n_layers;
  // train.recompute moe or full: the experts' gu (and the shared experts' act) once, in scratch.
  const bool recompute_experts = cfg.train.recomputes_experts();
  double acts = m.n_layers * (2 * R * d + 2 * R) + attention_sets * (4 * R * d * low + att) + Ld * 3 * R * dh * low;
  acts += R * d * low + R * d + (bf16 ? R * d * low : 0);  // ... and ln2's copy as the products read it
  acts += 2 * R + R * d + R * d * low + R + R * V + R;  // tokens, targets; xs_final, ln_f, rstd_f, logits, losses
  // dx dtmp, dqkv; attention scratch
  double scratch = 2 * R * d + 3 * R * d * low + att;
  double dispatch = 0;
  // The router's statistics per layer, in doubles (routing/route_stats.h): chunks x W, totals, balance.
  const double D = cfg.balance.device_groups > 0 ? cfg.balance.device_groups : ep, W = 2 * N + D;
  const double chunks = std::ceil(R / (cfg.balance.seq_alpha > 0 ? m.seq_len : RouteStatsSpec{}.chunk));
  const double statistics = 2 * (chunks * W + W + 1 + N + kBalanceLosses);
  double s_xe = 0, s_act = 0, s_dgate = 0, s_row_dgate = 0, s_yc = 0, s_tmp = 0;  // dyc and dxe: in yc
  double s_gu = 0;  // the routed experts' gu, when recomputed
  // dgu and dact serve the dense FFN's backward too, which sizes them first (model.cpp).
  double s_dgu = Ld > 0 ? R * 2 * dh : 0, s_dact = Ld > 0 ? R * dh : 0;
  const double sized_dgu = s_dgu, sized_dact = s_dact;
  for (int l = 0; l < Lm; ++l) {
    const double rows = rr.rows.empty() ? pairs : rr.rows[l];
    const double own = rr.rows.empty() ? pairs : rr.own_rows[l];
    const double out = rr.rows.empty() ? 0 : rr.units_out[l], in = rr.rows.empty() ? 0 : rr.units_in[l];
    const double back = pairs - own;  // this rank's pairs computed elsewhere
    const double combine = rows + back;
    acts += 2 * R * N + 2 * pairs + statistics + grown(pairs, combine);  // logits, scores, gates, sel; gates by row
    const double gu = grown(pairs * 2 * n, rows * 2 * n);
    if (recompute_experts)
      s_gu = std::max(s_gu, gu);
    else
      acts += (gu + sh_rows * 3 * sh) * low;  // the routed experts' gu; the shared experts' gu and act
    // Index arrays: pair_row, self_token, self CSR; with ep > 1 the token-copy lists and CSRs.
    dispatch += pairs + 2 * std::max(1.0, own) + (R + 1);
    if (ep > 1)
      dispatch += 2 * std::max(1.0, out) + (R + 1) + 2 * std::max(1.0, rows - own) + std::max(1.0, in) + 1 +
                  std::max(1.0, out) * d + std::max(1.0, in) * d;  // ..., send and token-copy buffers
    s_xe = std::max(s_xe, grown(pairs * d, rows * d));  // rebuilt by the backward, not kept
    s_act = std::max(s_act, grown(pairs * n, rows * n));
    s_dgate = std::max(s_dgate, pairs);
    s_row_dgate = std::max(s_row_dgate, grown(pairs, combine));
    s_yc = std::max(s_yc, grown(pairs * d, combine * d));
    s_dgu = std::max(s_dgu, grown(grown(sized_dgu, std::max(sh_rows * sh, pairs * n) * 2), rows * 2 * n));
    s_dact = std::max(s_dact, grown(grown(sized_dact, std::max(sh_rows * sh, pairs * n)), rows * n));
    s_tmp = std::max(s_tmp, R * N);
  }
  scratch += (s_xe + s_act + s_yc + s_dgu + s_dact) * low + s_dgate + s_row_dgate + s_tmp;
  if (recompute_experts && Lm > 0) scratch += (s_gu + sh_rows * 3 * sh) * low;
  if (bf16) {
    // The inputs stored in fp32 that one product (or batch) reads, rounded into the workspace:
    // the head's gradient products read dlogits [R, V]; the output projection's read dL/dh, the
    // shared experts' and the dense FFN's their output gradient [R, d].
    const double operand = std::max(R * V, R * d);
    // The attention backward's stream-ordered scratch (kernels/flash_attention.cu): bf16 copies
    // of q, k, v and dout per (sequence, head), padded to 128 rows and a head dim of 16, 32, 64
    // or 128, and two floats a row.
    const int hd = m.d_model / m.n_heads, HD = hd <= 16 ? 16 : hd <= 32 ? 32 : hd <= 64 ? 64 : 128;
    const double rows = (double)seqs * m.n_heads * std::ceil(m.seq_len / 128.0) * 128;
    mb.bf16 = 2 * P + 2 * operand + 32.0 * (1 << 20) + rows * (4 * HD * 2 + 8);
  }
  mb.activations = acts * f;
  mb.scratch = scratch * f;
  mb.dispatch = dispatch * f;
  return mb;
}

}  // namespace dsmoe::sim
