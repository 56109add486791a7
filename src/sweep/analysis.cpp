#include "sweep/analysis.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <optional>

#include "sweep/experiment_dir.h"
#include "sweep/manifest.h"
#include "util/check.h"
#include "util/format.h"

namespace dsmoe {
namespace {

namespace fs = std::filesystem;

std::string metrics_of(const std::string& dir, const std::string& run) { return dir + "/" + run + "/metrics.h5"; }

// Reads one run into `a`, or records why it cannot be read.
void read_run(Analysis& a, const std::string& run, const AnalysisOptions& opt) {
  try {
    a.runs.push_back(read_run_metrics(metrics_of(a.dir, run), run, opt.device_groups));
  } catch (const Error& e) {
    a.skipped.push_back(cat(run, ": ", e.what()));
  }
}

// The runs the manifest names; folders it does not name are foreign.
void read_manifest_runs(Analysis& a, const Manifest& m, const AnalysisOptions& opt) {
  a.experiment = m.experiment;
  a.order = m.variants;
  a.baseline = m.baseline;
  a.baseline_from = m.baseline_from;
  for (const ManifestRun& run : m.runs) {
    if (!fs::exists(metrics_of(a.dir, run.name))) {
      a.not_started.push_back(run.name);
      continue;
    }
    read_run(a, run.name, opt);
    if (a.runs.empty() || a.runs.back().run != run.name) continue;
    const RunMetrics& r = a.runs.back();
    if (r.variant != run.variant || r.seed != run.seed) {
      a.skipped.push_back(cat(run.name, ": holds variant ", r.variant, " seed ", r.seed, ", the experiment defines ",
                              run.variant, " seed ", run.seed, " (not analysed)"));
      a.runs.pop_back();
    }
  }
  for (const std::string& name : run_folders(a.dir)) {
    const bool defined = std::any_of(m.runs.begin(), m.runs.end(), [&](const ManifestRun& r) { return r.name == name; });
    if (!defined) a.foreign.push_back(name);
  }
}

// Without a manifest: every run folder; the same variant and seed twice counts once (the run
// that got further).
void read_folder_runs(Analysis& a, const AnalysisOptions& opt) {
  a.experiment = fs::path(a.dir).filename().string();
  a.notes.push_back(cat("no sweep.yaml in ", a.dir, " (dsmoe sweep and submit write it): every run folder is ",
                        "analysed, variants in the order found, runs not started are not known"));
  for (const std::string& name : run_folders(a.dir))
    if (fs::exists(metrics_of(a.dir, name))) read_run(a, name, opt);
  std::vector<RunMetrics> kept;
  for (const RunMetrics& r : a.runs) {
    auto same = std::find_if(kept.begin(), kept.end(),
                             [&](const RunMetrics& k) { return k.variant == r.variant && k.seed == r.seed; });
    if (same == kept.end()) {
      kept.push_back(r);
      continue;
    }
    const RunMetrics& dropped = r.step > same->step ? *same : r;
    a.skipped.push_back(cat(dropped.run, ": the same variant (", r.variant, ") and seed (", r.seed, ") as ",
                            (&dropped == &r ? same->run : r.run), ", which is counted instead"));
    if (&dropped == &*same) *same = r;
  }
  a.runs = kept;
  for (const RunMetrics& r : a.runs)
    if (std::find(a.order.begin(), a.order.end(), r.variant) == a.order.end()) a.order.push_back(r.variant);
  a.baseline = a.order.empty() ? "" : a.order.front();
  a.baseline_from = "the first variant found";
}

std::vector<double> values(const std::vector<const RunMetrics*>& runs, double RunMetrics::*field) {
  std::vector<double> out;
  for (const RunMetrics* r : runs) out.push_back(r->*field);
  return out;
}

std::string verdict_of(const Estimate& delta, bool lower_is_better) {
  const bool below = delta.high < 0, above = delta.low > 0;
  if (!below && !above) return "unresolved";
  return below == lower_is_better ? "better" : "worse";
}

// v's validation loss minus b's at each evaluation step, paired by seed.
std::vector<CurvePoint> loss_curve(const VariantStats& v, const VariantStats& b, double confidence) {
  std::map<int64_t, std::pair<std::vector<double>, std::vector<double>>> at;  // step -> (v's, b's) losses
  for (const RunMetrics* r : v.runs)
    for (const RunMetrics* s : b.runs) {
      if (r->seed != s->seed) continue;
      for (size_t i = 0; i < r->eval_steps.size(); ++i)
        for (size_t j = 0; j < s->eval_steps.size(); ++j)
          if (r->eval_steps[i] == s->eval_steps[j]) {
            auto& pair = at[static_cast<int64_t>(r->eval_steps[i])];
            pair.first.push_back(r->eval_losses[i]);
            pair.second.push_back(s->eval_losses[j]);
          }
    }
  std::vector<CurvePoint> curve;
  for (const auto& [step, losses] : at) {
    if (losses.first.size() < 2) continue;
    CurvePoint p;
    p.step = step;
    p.delta = paired_difference(losses.first, losses.second, confidence);
    p.verdict = verdict_of(p.delta, true);
    curve.push_back(p);
  }
  return curve;
}

// The comparison of `v` with the baseline `b` over the metric.
void compare(VariantStats& v, const VariantStats& b, const Metric& metric, double confidence) {
  std::vector<double> x, y;  // the seeds both have, paired
  for (const RunMetrics* r : v.runs)
    for (const RunMetrics* s : b.runs)
      if (r->seed == s->seed) x.push_back(r->*metric.field), y.push_back(s->*metric.field);
  if (x.size() >= 2) {
    v.method = "paired";
    v.delta = paired_difference(x, y, confidence);
  } else if (v.runs.size() >= 2 && b.runs.size() >= 2) {
    v.method = "welch";
    v.delta = welch_difference(values(v.runs, metric.field), values(b.runs, metric.field), confidence);
  } else {
    v.delta.mean = v.value.mean - b.value.mean;
    v.delta.low = v.delta.high = v.delta.p_value = RunMetrics::kNone;
    return;  // no interval: no verdict
  }
  v.verdict = verdict_of(v.delta, metric.lower_is_better);
  if (v.method == "paired" && v.verdict == "unresolved" && std::isfinite(v.delta.std))
    v.seeds_for_power = pairs_for_power(v.delta.mean, v.delta.std, confidence, kPlanningPower);
}

// A note where the ranked runs were made by more than one dsmoe build or on more than one device:
// each value with its runs (a difference between variants may then be the build's, and tokens/s
// compare only on one device).
void note_mixed_provenance(Analysis& a) {
  const std::pair<const char*, std::string RunMetrics::*> fields[] = {{"dsmoe builds", &RunMetrics::version},
                                                                      {"devices", &RunMetrics::device}};
  for (const auto& [what, field] : fields) {
    std::map<std::string, std::vector<std::string>> runs;  // value -> runs
    for (const VariantStats& v : a.ranked)
      for (const RunMetrics* r : v.runs) runs[(r->*field).empty() ? "not recorded" : r->*field].push_back(r->run);
    if (runs.size() < 2) continue;
    std::vector<std::string> parts;
    for (auto& [value, names] : runs) {
      std::sort(names.begin(), names.end());
      parts.push_back(cat(value, " (", join(names, ", "), ")"));
    }
    a.notes.push_back(cat("the runs compared were made by ", runs.size(), " ", what, ": ", join(parts, "; ")));
  }
}

}  // namespace

const std::vector<Metric>& analysis_metrics() {
  static const std::vector<Metric> metrics = {
      {"final_val_loss", "final validation loss (nats/token)", true, &RunMetrics::final_val_loss},
      {"best_val_loss", "best validation loss (nats/token)", true, &RunMetrics::best_val_loss},
      {"tokens_per_s", "training throughput (tokens/s)", false, &RunMetrics::tokens_per_s},
      {"max_violation", "global MaxVio (max/mean expert load - 1)", true, &RunMetrics::max_violation},
      {"device_max_violation", "device-group MaxVio (max/mean group load - 1)", true,
       &RunMetrics::device_max_violation},
      {"dead_experts", "dead experts (< 1 % of mean load)", true, &RunMetrics::dead_experts},
      {"load_cv", "expert load CV (std/mean)", true, &RunMetrics::load_cv},
  };
  return metrics;
}

const Metric& find_metric(const std::string& name) {
  std::vector<std::string> names;
  for (const Metric& m : analysis_metrics()) {
    if (name == m.name) return m;
    names.push_back(m.name);
  }
  throw Error(cat("--metric: no metric '", name, "' (one of ", join(names, ", "), ")"));
}

std::vector<const RunMetrics*> Analysis::unfinished() const {
  std::vector<const RunMetrics*> out;
  for (const RunMetrics& r : runs)
    if (!r.finished()) out.push_back(&r);
  return out;
}

Analysis analyze_experiment(const std::string& dir, const AnalysisOptions& opt) {
  Analysis a;
  a.dir = dir;
  a.metric = &find_metric(opt.metric);
  a.confidence = opt.confidence;
  if (const std::optional<Manifest> m = read_manifest(dir)) read_manifest_runs(a, *m, opt);
  else read_folder_runs(a, opt);
  DSMOE_CHECK(!a.runs.empty() || !a.not_started.empty(), dir, ": no run with a readable metrics.h5",
              a.skipped.empty() ? "" : cat(" (", a.skipped.front(), ")"));
  if (!opt.baseline.empty()) {
    DSMOE_CHECK(std::find(a.order.begin(), a.order.end(), opt.baseline) != a.order.end(), "--baseline: ",
                a.experiment, " has no variant '", opt.baseline, "' (its variants: ", join(a.order, ", "), ")");
    a.baseline = opt.baseline;
    a.baseline_from = "--baseline";
  }

  for (const std::string& variant : a.order) {
    VariantStats v;
    v.variant = variant;
    for (const RunMetrics& r : a.runs)
      if (r.variant == variant && r.finished() && !std::isnan(r.*a.metric->field)) v.runs.push_back(&r);
    if (v.runs.empty()) continue;
    std::sort(v.runs.begin(), v.runs.end(), [](const RunMetrics* x, const RunMetrics* y) { return x->seed < y->seed; });
    v.value = mean_estimate(values(v.runs, a.metric->field), opt.confidence);
    a.ranked.push_back(v);
  }
  const auto base = std::find_if(a.ranked.begin(), a.ranked.end(), [&](const VariantStats& v) { return v.variant == a.baseline; });
  if (base == a.ranked.end() && !a.ranked.empty()) {
    a.notes.push_back(cat("the baseline ", a.baseline, " has no finished run with a ", a.metric->name,
                          ": no differences (pass --baseline VARIANT)"));
  } else if (base != a.ranked.end()) {
    base->method = base->verdict = "baseline";
    for (VariantStats& v : a.ranked)
      if (&v != &*base) {
        compare(v, *base, *a.metric, opt.confidence);
        v.curve = loss_curve(v, *base, opt.confidence);
      }
  }
  note_mixed_provenance(a);
  const bool lower = a.metric->lower_is_better;
  std::stable_sort(a.ranked.begin(), a.ranked.end(), [lower](const VariantStats& x, const VariantStats& y) {
    return lower ? x.value.mean < y.value.mean : x.value.mean > y.value.mean;
  });
  return a;
}

}  // namespace dsmoe
