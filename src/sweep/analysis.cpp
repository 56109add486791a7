#include "sweep/analysis.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

#include "util/check.h"

namespace dsmoe {
namespace {

// Mean and sample standard deviation of the values that are there (not NaN).
std::pair<double, double> mean_spread(const std::vector<double>& xs) {
  std::vector<double> v;
  for (double x : xs)
    if (!std::isnan(x)) v.push_back(x);
  if (v.empty()) return {RunMetrics::kNone, RunMetrics::kNone};
  double mean = 0, ss = 0;
  for (double x : v) mean += x / static_cast<double>(v.size());
  for (double x : v) ss += (x - mean) * (x - mean);
  return {mean, v.size() > 1 ? std::sqrt(ss / static_cast<double>(v.size() - 1)) : 0};
}

double largest(const std::vector<double>& xs) {
  double out = RunMetrics::kNone;
  for (double x : xs)
    if (!std::isnan(x)) out = std::isnan(out) ? x : std::max(out, x);
  return out;
}

template <class F>
std::vector<double> each(const std::vector<const RunMetrics*>& runs, F field) {
  std::vector<double> out;
  for (const RunMetrics* r : runs) out.push_back(field(*r));
  return out;
}

}  // namespace

ExperimentRuns read_experiment_runs(const std::string& dir) {
  namespace fs = std::filesystem;
  DSMOE_CHECK(fs::is_directory(dir), dir, ": not a folder (expected runs/<experiment>)");
  std::vector<fs::path> folders;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_directory() && fs::exists(entry.path() / "metrics.h5")) folders.push_back(entry.path());
  std::sort(folders.begin(), folders.end());
  ExperimentRuns out;
  for (const fs::path& folder : folders) {
    try {
      out.runs.push_back(read_run_metrics((folder / "metrics.h5").string(), folder.filename().string()));
    } catch (const Error& e) {
      out.skipped.push_back(cat(folder.filename().string(), ": ", e.what()));
    }
  }
  DSMOE_CHECK(!out.runs.empty(), dir, ": no run with a readable metrics.h5",
              out.skipped.empty() ? "" : cat(" (", out.skipped.front(), ")"));
  return out;
}

std::vector<VariantSummary> summarize(const std::vector<RunMetrics>& runs) {
  std::map<std::string, std::vector<const RunMetrics*>> by_variant;
  for (const RunMetrics& r : runs) by_variant[r.variant].push_back(&r);
  std::vector<VariantSummary> out;
  for (const auto& [name, rs] : by_variant) {
    VariantSummary s;
    s.variant = name;
    s.runs = static_cast<double>(rs.size());
    std::tie(s.final_val_loss_mean, s.final_val_loss_spread) = mean_spread(each(rs, [](auto& r) { return r.final_val_loss; }));
    std::tie(s.best_val_loss_mean, s.best_val_loss_spread) = mean_spread(each(rs, [](auto& r) { return r.best_val_loss; }));
    s.tokens = mean_spread(each(rs, [](auto& r) { return static_cast<double>(r.tokens); })).first;
    s.tokens_per_s = mean_spread(each(rs, [](auto& r) { return r.tokens_per_s; })).first;
    s.max_violation_mean = mean_spread(each(rs, [](auto& r) { return r.max_violation_mean; })).first;
    s.max_violation_max = largest(each(rs, [](auto& r) { return r.max_violation_max; }));
    s.load_cv = mean_spread(each(rs, [](auto& r) { return r.load_cv; })).first;
    s.dropped_fraction = mean_spread(each(rs, [](auto& r) { return r.dropped_fraction; })).first;
    s.params_active = static_cast<double>(rs.front()->params_active);
    s.flops_per_token = rs.front()->flops_per_token;
    s.progress = mean_spread(each(rs, [](auto& r) { return static_cast<double>(r.step) / r.steps; })).first;
    out.push_back(s);
  }
  std::stable_sort(out.begin(), out.end(), [](const VariantSummary& a, const VariantSummary& b) {
    if (std::isnan(a.final_val_loss_mean) || std::isnan(b.final_val_loss_mean))
      return !std::isnan(a.final_val_loss_mean) && std::isnan(b.final_val_loss_mean);
    return a.final_val_loss_mean < b.final_val_loss_mean;
  });
  return out;
}

}  // namespace dsmoe
