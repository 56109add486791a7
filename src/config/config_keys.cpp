#include "config/config_keys.h"

#include <algorithm>
#include <initializer_list>
#include <type_traits>
#include <utility>

#include "config/scalar.h"

namespace dsmoe::config_internal {
namespace {

// Range rules: callables from a value to its problem ("" when fine).
const auto any = [](const auto&) { return std::string(); };

template <class T>
auto at_least(T lo) {
  return [lo](const auto& v) {
    return v >= lo ? std::string() : "must be >= " + show_scalar(lo) + ", got " + show_scalar(v);
  };
}

auto above(double lo) {
  return [lo](double v) {
    return v > lo ? std::string() : "must be > " + show_scalar(lo) + ", got " + show_scalar(v);
  };
}

// [0, 1) when zero is allowed, else (0, 1).
auto unit_interval(bool zero_allowed) {
  return [zero_allowed](double v) {
    bool ok = (zero_allowed ? v >= 0 : v > 0) && v < 1;
    return ok ? std::string()
              : std::string("must be in ") + (zero_allowed ? "[0, 1)" : "(0, 1)") + ", got " +
                    show_scalar(v);
  };
}

auto one_of(std::vector<std::string> choices) {
  return [choices](const std::string& v) {
    if (std::find(choices.begin(), choices.end(), v) != choices.end()) return std::string();
    std::string list;
    for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
    return "must be one of " + list + ", got '" + v + "'";
  };
}

const auto non_empty = [](const std::string& v) {
  return v.empty() ? std::string("must not be empty") : std::string();
};

template <class Ref, class Rule>
Key make_key(const char* path, Ref ref, Rule rule) {
  using T = std::decay_t<decltype(ref(std::declval<Config&>()))>;
  Key k;
  k.path = path;
  k.type = type_name(T{});
  k.is_string = std::is_same_v<T, std::string>;
  k.read = [ref](Config& c, const std::string& s) { return read_scalar(s, ref(c)); };
  k.check = [ref, rule](const Config& c) { return rule(ref(c)); };
  k.show = [ref](const Config& c) { return show_scalar(ref(c)); };
  k.equal = [ref](const Config& a, const Config& b) { return ref(a) == ref(b); };
  return k;
}

// The YAML path of a key is the path of its member in Config.
// clang-format off
#define DSMOE_KEY(field, rule) make_key(#field, [](auto& c) -> auto& { return c.field; }, rule)
// clang-format on

Key extension(Key k) {
  k.extension = true;
  return k;
}

std::vector<Key> build_keys() {
  return {
      DSMOE_KEY(name, any),
      DSMOE_KEY(seed, any),
      DSMOE_KEY(backend, one_of({"auto", "cpu", "cuda"})),
      DSMOE_KEY(precision, one_of({"fp32", "bf16"})),
      DSMOE_KEY(model.vocab_size, at_least(0)),
      DSMOE_KEY(model.d_model, at_least(1)),
      DSMOE_KEY(model.n_layers, at_least(1)),
      DSMOE_KEY(model.n_heads, at_least(1)),
      DSMOE_KEY(model.seq_len, at_least(1)),
      DSMOE_KEY(model.first_dense_layers, at_least(0)),
      DSMOE_KEY(model.dense_hidden, at_least(1)),
      DSMOE_KEY(model.rope_theta, above(0)),
      DSMOE_KEY(model.norm_eps, above(0)),
      DSMOE_KEY(model.tie_embeddings, any),
      DSMOE_KEY(model.init_std, at_least(0.0)),
      DSMOE_KEY(moe.n_routed, at_least(1)),
      DSMOE_KEY(moe.n_shared, at_least(0)),
      DSMOE_KEY(moe.top_k, at_least(1)),
      DSMOE_KEY(moe.expert_hidden, at_least(1)),
      DSMOE_KEY(moe.score, one_of({"softmax", "softmax_topk", "sigmoid"})),
      DSMOE_KEY(moe.norm_topk, any),
      DSMOE_KEY(moe.router_noise, at_least(0.0)),
      DSMOE_KEY(moe.capacity_factor, at_least(0.0)),
      DSMOE_KEY(moe.route_devices, at_least(0)),
      extension(DSMOE_KEY(moe.force_balance, any)),
      DSMOE_KEY(balance.expert_alpha, at_least(0.0)),
      DSMOE_KEY(balance.device_alpha, at_least(0.0)),
      DSMOE_KEY(balance.device_groups, at_least(0)),
      DSMOE_KEY(balance.seq_alpha, at_least(0.0)),
      DSMOE_KEY(balance.comm_alpha, at_least(0.0)),
      DSMOE_KEY(balance.bias_rate, at_least(0.0)),
      DSMOE_KEY(train.steps, at_least(1)),
      DSMOE_KEY(train.batch_size, at_least(1)),
      DSMOE_KEY(train.micro_batches, at_least(1)),
      DSMOE_KEY(train.lr, above(0)),
      DSMOE_KEY(train.min_lr, at_least(0.0)),
      DSMOE_KEY(train.warmup_steps, at_least(0)),
      DSMOE_KEY(train.schedule, one_of({"cosine", "constant"})),
      DSMOE_KEY(train.beta1, unit_interval(true)),
      DSMOE_KEY(train.beta2, unit_interval(true)),
      DSMOE_KEY(train.eps, above(0)),
      DSMOE_KEY(train.weight_decay, at_least(0.0)),
      DSMOE_KEY(train.grad_clip, at_least(0.0)),
      DSMOE_KEY(train.log_every, at_least(1)),
      DSMOE_KEY(train.eval_every, at_least(0)),
      DSMOE_KEY(train.eval_batches, at_least(1)),
      DSMOE_KEY(train.checkpoint_every, at_least(0)),
      extension(DSMOE_KEY(train.keep_checkpoints, at_least(0))),
      extension(DSMOE_KEY(train.recompute, one_of({std::begin(kRecomputeSettings), std::end(kRecomputeSettings)}))),
      DSMOE_KEY(data.path, non_empty),
      DSMOE_KEY(data.val_fraction, unit_interval(false)),
      DSMOE_KEY(data.shuffle, any),
      DSMOE_KEY(parallel.expert_parallel, at_least(0)),
      extension(DSMOE_KEY(parallel.grad_bucket_mb, at_least(0.0))),
      extension(DSMOE_KEY(parallel.shard_optimizer, any)),
      DSMOE_KEY(out, non_empty),
  };
}

#undef DSMOE_KEY

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string leaf(const std::string& path) { return path.substr(path.rfind('.') + 1); }

std::string section_of(const std::string& path) {
  size_t dot = path.find('.');
  return dot == std::string::npos ? "" : path.substr(0, dot);
}

}  // namespace

const std::vector<Key>& config_keys() {
  static const std::vector<Key> keys = build_keys();
  return keys;
}

const Key* find_key(const std::string& path) {
  for (const auto& k : config_keys())
    if (k.path == path) return &k;
  return nullptr;
}

bool is_section(const std::string& name) {
  for (const auto& k : config_keys())
    if (section_of(k.path) == name) return true;
  return false;
}

std::string suggest_key(const std::string& path) {
  std::string best;
  size_t best_d = std::string::npos;
  for (const auto& k : config_keys()) {
    // A right key name in the wrong section (or none) counts as close.
    size_t d = leaf(k.path) == leaf(path) ? 1 : edit_distance(path, k.path);
    if (d < best_d) best = k.path, best_d = d;
    std::string section = section_of(k.path);
    if (!section.empty() && (d = edit_distance(path, section)) < best_d) best = section, best_d = d;
  }
  return best_d <= 2 || best_d * 3 <= path.size() ? best : "";
}

}  // namespace dsmoe::config_internal
