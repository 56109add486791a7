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

double median(std::vector<double> v) {
  if (v.empty()) return RunMetrics::kNone;
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : (v[h - 1] + v[h]) / 2;
}

void read_balance(hid_t f, int64_t rows, int n_routed, RunMetrics& m) {
  if (rows == 0) return;
  const std::vector<double> mv = read_series(f, "experts/max_violation", rows);
  const std::vector<double> load = read_series(f, "experts/load", rows);
  const std::vector<double> dropped = read_series(f, "experts/dropped", rows);
  double mv_sum = 0, cv_sum = 0, load_sum = 0, dropped_sum = 0;
  m.max_violation_max = -INFINITY;
  for (double x : mv) mv_sum += x, m.max_violation_max = std::max(m.max_violation_max, x);
  m.max_violation_mean = mv_sum / static_cast<double>(mv.size());
  int64_t groups = 0;
  for (size_t g = 0; g + n_routed <= load.size(); g += n_routed, ++groups) {
    double mean = 0, var = 0;
    for (int i = 0; i < n_routed; ++i) mean += load[g + i] / n_routed;
    for (int i = 0; i < n_routed; ++i) var += (load[g + i] - mean) * (load[g + i] - mean) / n_routed;
    cv_sum += mean > 0 ? std::sqrt(var) / mean : 0;
    load_sum += mean * n_routed;
  }
  m.load_cv = cv_sum / static_cast<double>(groups);
  for (double x : dropped) dropped_sum += x;
  m.dropped_fraction = load_sum > 0 ? dropped_sum / load_sum : 0;
}

}  // namespace

RunMetrics read_run_metrics(const std::string& path, const std::string& run) {
  h5::silence_errors();
  try {
    h5::Handle fapl = h5::file_access(H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    h5::Handle f = h5::open_file(path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl);
    DSMOE_CHECK(f.valid(), "cannot open it as HDF5");
    const Config cfg = parse_config(h5::read_attr_string(f, "config"), path + " (config attribute)");
    RunMetrics m;
    m.run = run;
    m.variant = cfg.name;
    m.seed = cfg.seed;
    m.steps = cfg.train.steps;
    m.params_total = h5::read_attr_int64(f, "params_total");
    m.params_active = h5::read_attr_int64(f, "params_active");
    m.flops_per_token = h5::read_attr_double(f, "flops_per_token");

    const int64_t train_rows = rows_of(f, "train");
    if (train_rows > 0) {
      m.step = static_cast<int64_t>(read_series(f, "train/step", train_rows).back());
      m.tokens = static_cast<int64_t>(read_series(f, "train/tokens", train_rows).back());
      m.tokens_per_s = median(read_series(f, "train/tokens_per_s", train_rows));
    }
    const std::vector<double> evals = read_series(f, "eval/loss", rows_of(f, "eval"));
    if (!evals.empty()) {
      m.final_val_loss = evals.back();
      m.best_val_loss = *std::min_element(evals.begin(), evals.end());
    }
    if (cfg.n_moe_layers() > 0) read_balance(f, rows_of(f, "experts"), cfg.moe.n_routed, m);
    return m;
  } catch (const Error& e) {
    throw Error(cat(path, ": ", e.what()));
  }
}

}  // namespace dsmoe
