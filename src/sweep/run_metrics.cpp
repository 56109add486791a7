#include "sweep/run_metrics.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "config/config.h"
#include "io/h5.h"
#include "util/check.h"

namespace dsmoe {
namespace {

// The first `rows` rows of a dataset as doubles, flattened.
std::vector<double> read_series(hid_t file, const std::string& path, int64_t rows) {
  h5::Handle d = h5::open_dataset(file, path);
  std::vector<int64_t> block = h5::shape(d);
  DSMOE_CHECK(!block.empty() && block[0] >= rows, path, " has fewer rows than its step dataset");
  block[0] = rows;
  int64_t n = 1;
  for (int64_t x : block) n *= x;
  std::vector<double> out(static_cast<size_t>(n));
  if (n > 0) h5::read_rows(d, H5T_NATIVE_DOUBLE, 0, block, out.data());
  return out;
}

// Rows that are complete: a group's `step` dataset is extended after the rest of its row.
int64_t rows_of(hid_t file, const std::string& group) {
  return h5::exists(file, group + "/step") ? h5::shape(h5::open_dataset(file, group + "/step")).at(0) : 0;
}

h5::Handle open_swmr(const std::string& path) {
  h5::silence_errors();
  h5::Handle fapl = h5::file_access(H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
  h5::Handle f = h5::open_file(path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl);
  DSMOE_CHECK(f.valid(), "cannot open it as HDF5");
  return f;
}

double median(std::vector<double> v) {
  if (v.empty()) return RunMetrics::kNone;
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : (v[h - 1] + v[h]) / 2;
}

// max / mean - 1 of `load` summed over equal contiguous groups of its entries.
double grouped_max_violation(const double* load, int n, int groups) {
  std::vector<double> sums(static_cast<size_t>(groups), 0.0);
  for (int i = 0; i < n; ++i) sums[static_cast<size_t>(i / (n / groups))] += load[i];
  double total = 0, top = 0;
  for (double s : sums) total += s, top = std::max(top, s);
  return total > 0 ? top / (total / groups) - 1 : 0;
}

void read_balance(hid_t f, int64_t rows, int n_layers, RunMetrics& m) {
  if (rows == 0) return;
  const int N = m.n_routed;
  const std::vector<double> steps = read_series(f, "experts/step", rows);
  const std::vector<double> load = read_series(f, "experts/load", rows);    // [rows, layers, N]
  const std::vector<double> dropped = read_series(f, "experts/dropped", rows);  // [rows, layers]
  double selected = 0, dropped_sum = 0;
  for (double x : load) selected += x;
  for (double x : dropped) dropped_sum += x;
  m.dropped_fraction = selected > 0 ? dropped_sum / selected : 0;

  // The window: logged steps after (1 - kBalanceWindow) of the last one, at least the last row.
  const double from = steps.back() * (1 - kBalanceWindow);
  int64_t first = rows - 1;
  while (first > 0 && steps[static_cast<size_t>(first - 1)] > from) --first;
  std::vector<double> window(static_cast<size_t>(n_layers) * N, 0.0);  // [layers, N]
  for (int64_t r = first; r < rows; ++r)
    for (size_t i = 0; i < window.size(); ++i) window[i] += load[static_cast<size_t>(r) * window.size() + i];

  double mv = 0, dmv = 0, cv = 0, dead = 0;
  for (int l = 0; l < n_layers; ++l) {
    const double* x = window.data() + static_cast<size_t>(l) * N;
    double mean = 0, var = 0;
    for (int i = 0; i < N; ++i) mean += x[i] / N;
    for (int i = 0; i < N; ++i) var += (x[i] - mean) * (x[i] - mean) / N;
    for (int i = 0; i < N; ++i) dead += x[i] < kDeadExpertShare * mean ? 1 : 0;
    mv += grouped_max_violation(x, N, N);
    dmv += grouped_max_violation(x, N, m.device_groups);
    cv += mean > 0 ? std::sqrt(var) / mean : 0;
  }
  m.max_violation = mv / n_layers;
  m.device_max_violation = dmv / n_layers;
  m.load_cv = cv / n_layers;
  m.dead_experts = dead;
}

int expert_parallel_size(const Config& cfg, int world_size) {
  return cfg.parallel.expert_parallel > 0 ? cfg.parallel.expert_parallel : world_size;
}

}  // namespace

RunMetrics read_run_metrics(const std::string& path, const std::string& run, int device_groups) {
  try {
    h5::Handle f = open_swmr(path);
    const Config cfg = parse_config(h5::read_attr_string(f, "config"), path + " (config attribute)");
    RunMetrics m;
    m.run = run;
    m.variant = cfg.name;
    m.seed = cfg.seed;
    m.steps = cfg.train.steps;
    m.params_total = h5::read_attr_int64(f, "params_total");
    m.params_active = h5::read_attr_int64(f, "params_active");
    m.flops_per_token = h5::read_attr_double(f, "flops_per_token");
    m.first_moe_layer = cfg.model.first_dense_layers;
    if (h5::has_attr(f, "dsmoe_version")) m.version = h5::read_attr_string(f, "dsmoe_version");
    if (h5::has_attr(f, "device")) m.device = h5::read_attr_string(f, "device");

    const int64_t train_rows = rows_of(f, "train");
    if (train_rows > 0) {
      m.step = static_cast<int64_t>(read_series(f, "train/step", train_rows).back());
      m.tokens = static_cast<int64_t>(read_series(f, "train/tokens", train_rows).back());
      m.tokens_per_s = median(read_series(f, "train/tokens_per_s", train_rows));
    }
    const int64_t eval_rows = rows_of(f, "eval");
    m.eval_losses = read_series(f, "eval/loss", eval_rows);
    m.eval_steps = read_series(f, "eval/step", eval_rows);
    if (!m.eval_losses.empty()) {
      m.final_val_loss = m.eval_losses.back();
      m.final_eval_step = static_cast<int64_t>(m.eval_steps.back());
      m.best_val_loss = *std::min_element(m.eval_losses.begin(), m.eval_losses.end());
    }
    if (cfg.n_moe_layers() > 0) {
      m.n_routed = cfg.moe.n_routed;
      const int world = static_cast<int>(h5::read_attr_int64(f, "world_size"));
      m.device_groups = device_groups > 0               ? device_groups
                        : cfg.balance.device_groups > 0 ? cfg.balance.device_groups
                                                        : expert_parallel_size(cfg, world);
      DSMOE_CHECK(m.device_groups >= 1 && m.n_routed % m.device_groups == 0, m.device_groups,
                  " device groups do not divide its ", m.n_routed, " routed experts");
      read_balance(f, rows_of(f, "experts"), cfg.n_moe_layers(), m);
    }
    return m;
  } catch (const Error& e) {
    throw Error(cat(path, ": ", e.what()));
  }
}

int64_t read_logged_step(const std::string& path) {
  try {
    h5::Handle f = open_swmr(path);
    const int64_t rows = rows_of(f, "train");
    return rows > 0 ? static_cast<int64_t>(read_series(f, "train/step", rows).back()) : 0;
  } catch (const Error&) {
    return -1;
  }
}

}  // namespace dsmoe
