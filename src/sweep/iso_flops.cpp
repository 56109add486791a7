#include "sweep/iso_flops.h"

#include <cmath>
#include <optional>

#include "config/config_keys.h"
#include "model/flops.h"
#include "sweep/settings.h"
#include "util/check.h"

namespace dsmoe {
namespace {

constexpr int64_t kLargest = int64_t{1} << 30;  // beyond any width or count a run could have
constexpr int64_t kScan = 1 << 16;              // how far to look for a valid value on each side

// Evaluates the config at values of the key; leaves the key at the last value probed.
class Probe {
 public:
  Probe(Config& cfg, const std::string& key, const std::string& where) : cfg_(cfg), key_(key), where_(where) {}
  void set(int64_t v) { set_integer_key(cfg_, key_, v, where_); }
  double flops(int64_t v) {
    set(v);
    return count_model(cfg_).flops_per_token;
  }
  // The key's own range only.
  bool in_range(int64_t v) {
    set(v);
    return config_internal::find_key(key_)->check(cfg_).empty();
  }
  // "" when the whole config is valid at v.
  std::string problem(int64_t v) {
    set(v);
    try {
      validate_config(cfg_, 0);
      return "";
    } catch (const Error& e) {
      return e.what();
    }
  }
  // The first valid value from `v` on, moving by `dir`, not below `lo`.
  std::optional<int64_t> valid_from(int64_t v, int dir, int64_t lo) {
    for (int64_t i = 0; i < kScan && v >= lo && v <= kLargest; ++i, v += dir)
      if (problem(v).empty()) return v;
    return std::nullopt;
  }

 private:
  Config& cfg_;
  std::string key_, where_;
};

}  // namespace

Solved solve_iso_flops(Config& cfg, const std::string& key, double target, const std::string& context) {
  Probe probe(cfg, key, context + " (iso-FLOPs)");
  const int64_t lo = probe.in_range(0) ? 0 : 1;
  // The smallest value with flops >= target, by doubling then bisection.
  int64_t hi = std::max<int64_t>(lo, 1);
  while (probe.flops(hi) < target) {
    DSMOE_CHECK(hi < kLargest, context, ": ", key, " cannot reach ", target, " FLOPs per token (",
                probe.flops(hi), " at ", key, " = ", hi, "; does it change the FLOPs at all?)");
    hi *= 2;
  }
  int64_t a = lo, b = hi;
  while (a < b) {
    const int64_t mid = a + (b - a) / 2;
    if (probe.flops(mid) >= target)
      b = mid;
    else
      a = mid + 1;
  }
  // The nearest valid values below and from there; the nearer in FLOPs wins, the smaller on a tie.
  std::optional<int64_t> best;
  double best_gap = 0;
  for (std::optional<int64_t> v : {probe.valid_from(a - 1, -1, lo), probe.valid_from(a, +1, lo)}) {
    if (!v) continue;
    const double gap = std::fabs(probe.flops(*v) - target);
    if (!best || gap < best_gap) best = v, best_gap = gap;
  }
  DSMOE_CHECK(best, context, ": ", key, ": no valid value near ", a, " (", probe.problem(a), ")");
  return Solved{*best, probe.flops(*best)};
}

}  // namespace dsmoe
