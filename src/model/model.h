// The DeepSeekMoE language model (docs/model.md, Network): forward and backward over one
// micro-batch of this rank's sequences, parameters and gradients in contiguous buffers
// described by one ParamTable.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "comm/comm.h"
#include "config/config.h"
#include "moe/moe_layer.h"
#include "params/param_table.h"

namespace dsmoe {

struct ForwardOpts {
  bool training = false;       // router noise on
  int64_t tokens_global = 0;   // tokens of the micro-batch over all ranks (0 = this rank's)
  int64_t token_offset = 0;    // global index of this rank's first token
  uint64_t noise_key = 0;      // hash of (seed, step, micro-batch); the layer is mixed in
  double loss_scale = 1.0;     // 1 / micro_batches: the step minimizes the mean over micro-batches
};

struct ForwardResult {
  double ce_sum = 0;   // sum of this rank's token cross-entropies
  double aux_loss = 0; // balance terms summed over MoE layers (global)
};

RouterSpec router_spec(const Config& cfg, int expert_parallel_size);

template <typename T>
class Model {
 public:
  // max_seqs: the most sequences this rank feeds in one forward. world: every rank (balance
  // statistics are global); ep: this rank's expert-parallel group (null: one rank holding
  // every expert).
  Model(const Config& cfg, Backend<T>& be, Comm& world, int max_seqs, Comm* ep = nullptr);

  const Config& config() const { return cfg_; }
  const ExpertPlacement& placement() const { return placement_; }
  const ParamTable& table() const { return table_; }
  T* params() { return params_; }
  T* grads() { return grads_; }
  const std::vector<int>& moe_layers() const { return moe_layer_ids_; }
  // The balance bias of each MoE layer's router, [n_routed] each (checkpoints, metrics).
  std::vector<std::vector<float>> bias() const;
  void set_bias(const std::vector<std::vector<float>>& bias);
  // The last forward's routing statistics of MoE layer i (load, dropped pairs, losses).
  const Routing<T>& routing(int i) const { return moe_[i]->router().statistics(); }
  // Auxiliary-loss-free balancing after a step: load [moe_layers * n_routed] its selections.
  void update_bias(const std::vector<double>& load, double rate);
  const MoeLayer<T>& moe_layer(int i) const { return *moe_[i]; }
  MoeLayer<T>& moe_layer(int i) { return *moe_[i]; }

  // Normal(0, init_std) for matrices, 1 for norm weights; each element is a pure function of
  // (seed, tensor, global element index), so every rank count initializes the same model.
  void init_params(uint64_t seed);
  std::vector<float> params_to_host();
  void params_from_host(const std::vector<float>& p);
  // Starts a step's gradients: the next backward writes them (its products with beta = 0, so
  // most of the buffer needs no zero fill: only the tensors that the backward adds to are
  // zeroed here), the ones after it add to them.
  void zero_grads();

  // tokens, targets: host arrays [n_seqs * seq_len]; targets null = no loss (logits kept).
  ForwardResult forward(const int32_t* tokens, const int32_t* targets, int n_seqs, const ForwardOpts& opts);
  // Gradients of loss_scale * (CE_sum / tokens_global + aux) of the last forward, added to the
  // gradient buffer (the first after zero_grads writes it). `stage_done(s)`, when given, is
  // called once the backward has queued the last write of stage s's gradients.
  void backward(const std::function<void(int stage)>& stage_done = nullptr);
  // The tensors whose gradients the backward finishes, by stage in the order it finishes them:
  // the head (final_norm, an untied lm_head), each layer from the last, the embedding.
  std::vector<std::vector<std::string>> backward_stages() const;
  // Generation with a KV cache (docs/model.md, Generation): positions [first, first + n) of one
  // sequence `tokens` [n], computed as forward() computes them (no router noise) over the
  // positions before them that earlier calls cached: every layer's keys and values (the rows of
  // its qkv activation) and, with capacity, how often each expert was selected (capacity counts
  // the whole sequence, seq_len tokens, in position order). first = 0 starts a sequence, any
  // other first must be where the last call ended; a forward() in between clears the cache. No
  // backward follows.
  void forward_positions(const int32_t* tokens, int first, int n);
  // Logits [V] of row `row` (sequence row / seq_len, position row % seq_len) of the last forward
  // without targets, or of the last forward_positions' sequence.
  std::vector<T> logits_row_to_host(int row);

 private:
  struct AttentionActs {  // qkv after RoPE, the attention's output and what its backward needs
    Buf<T> saved;
    ActBuf<T> qkv, att;  // only products, RoPE and the attention read them
  };
  struct LayerActs {  // what one layer keeps for its backward
    Buf<T> x, rstd1, h, rstd2;
    AttentionActs attention;    // empty under train.recompute: attention (shared_attention_ instead)
    ActBuf<T> ffn_gu, ffn_act;  // dense layers
  };
  // Layer l's attention activations: its own, or with recompute the one set all layers share.
  AttentionActs& attention(int l) { return recompute_attention_ ? shared_attention_ : acts_[l].attention; }
  T* p(const std::string& name) { return params_.data() + table_.get(name).offset; }
  T* g(const std::string& name) { return grads_.data() + table_.get(name).offset; }
  T* gate_up(const std::string& prefix, bool grads);
  MoeParams<T> moe_params(int layer, bool grads);
  int moe_index_of(int layer) const;  // its index in moe_layer_ids_
  // The forward's parts that act on each position alone, on rows [first, first + rows): the
  // embedding, the attention's input (qkv before RoPE) and output (h), the FFN (the layer's
  // output), and the head (logits).
  void embed(int first, int rows);
  void attend(int l);
  void attention_input(int l, int first, int rows);
  void attention_output(int l, int first, int rows);
  void ffn(int l, int first, int rows, const RouteContext& ctx);
  void head(int first, int rows);

  Config cfg_;
  Backend<T>& be_;
  std::unique_ptr<Comm> own_ep_;  // when no expert-parallel group was given
  ExpertPlacement placement_;
  ParamTable table_;
  Buf<T> params_, grads_;
  T grad_beta_ = 0;  // 0: the next backward writes the gradients, 1: it adds to them
  std::vector<int> moe_layer_ids_;
  MoeScratch<T> moe_scratch_;                       // shared by the MoE layers, outlives them
  std::vector<std::unique_ptr<MoeLayer<T>>> moe_;  // indexed like moe_layer_ids_
  std::vector<LayerActs> acts_;
  bool recompute_attention_ = false;
  AttentionActs shared_attention_;
  int max_seqs_, n_seqs_ = 0;
  int cached_positions_ = 0;  // forward_positions' sequence: positions 0 .. cached_positions_ - 1
  // With capacity: per MoE layer, the selections [N] of each expert by the cached positions.
  std::vector<std::vector<int64_t>> position_selections_;
  double loss_scale_ = 1, ce_scale_ = 0;
  Buf<int32_t> tokens_, targets_;
  Buf<T> xs_final_, rstd_f_, logits_, losses_;
  ActBuf<T> ln_f_;
  // The norms' outputs are not kept per layer: the backward recomputes them from x, h and the
  // saved rstd (one elementwise pass each, against 3 R d bytes a layer).
  ActBuf<T> ln1_;
  // The FFN norm's output: in exact fp32 for the router (MoE layers), and as the FFN's products
  // and the dispatcher read it (ln2_low_: bf16 under bf16 storage; otherwise ln2_ serves both).
  Buf<T> ln2_;
  ActBuf<T> ln2_low_;
  Ptr<T> ffn_input() { return be_.bf16_storage() ? ln2_low_.ptr() : Ptr<T>(ln2_.data()); }
  // Both, as the FFN of layer l reads them (the same kernel and inputs as the forward's), for rows
  // [first, first + rows).
  void ffn_norm(int l, int first, int rows);
  Buf<T> dx_, dtmp_, att_scratch_;
  ActBuf<T> dqkv_;
};

}  // namespace dsmoe
