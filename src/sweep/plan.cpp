#include "sweep/plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "data/tokens.h"
#include "data/vocab.h"
#include "sweep/iso_flops.h"
#include "sweep/name_template.h"
#include "util/check.h"

namespace dsmoe {
namespace {

struct ResolvedVariant {
  const Variant* variant;
  Config cfg;
};

// vocab_size 0 is taken from the data, as `dsmoe train` does, so the counts are the run's.
class VocabResolver {
 public:
  void resolve(Config& cfg) {
    if (cfg.model.vocab_size != 0) return;
    auto it = vocab_.find(cfg.data.path);
    if (it == vocab_.end()) {
      Config probe = cfg;
      resolve_vocab(probe, load_tokens(cfg.data.path));
      it = vocab_.emplace(cfg.data.path, probe.model.vocab_size).first;
    }
    cfg.model.vocab_size = it->second;
  }

 private:
  std::map<std::string, int> vocab_;
};

std::string percent(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%+.2f %%", 100 * x);
  return buf;
}

}  // namespace

SweepPlan plan_sweep(const Experiment& exp, const std::string& runs_root) {
  SweepPlan plan;
  plan.experiment = exp.name;
  plan.dir = runs_root + "/" + exp.name;
  plan.ranks = exp.ranks;
  plan.iso = exp.iso.enabled;
  plan.tolerance = exp.iso.tolerance;

  VocabResolver vocab;
  std::vector<ResolvedVariant> variants;
  for (const Variant& v : exp.variants) {
    std::vector<Setting> settings = exp.base_settings;
    settings.insert(settings.end(), v.settings.begin(), v.settings.end());
    variants.push_back({&v, apply_settings(exp.base, settings)});
    vocab.resolve(variants.back().cfg);
  }

  plan.target = count_model(variants.front().cfg).flops_per_token;
  plan.target_from = "the first variant, " + variants.front().variant->name;
  if (exp.iso.target > 0) {
    plan.target = exp.iso.target;
    plan.target_from = "iso_flops.target";
  }
  plan.baseline = exp.variants.front().name;
  plan.baseline_from = "the first variant";
  if (!exp.iso.reference.empty()) plan.baseline = exp.iso.reference, plan.baseline_from = "the iso-FLOPs reference";
  for (const ResolvedVariant& rv : variants)
    if (rv.variant->name == exp.iso.reference) {
      plan.target = count_model(rv.cfg).flops_per_token;
      plan.target_from = "the reference variant, " + exp.iso.reference;
    }

  for (ResolvedVariant& rv : variants) {
    const Variant& v = *rv.variant;
    plan.variants.push_back(v.name);
    int64_t solved = 0;
    if (!v.free_key.empty()) solved = solve_iso_flops(rv.cfg, v.free_key, plan.target, v.where + ": " + v.name).value;
    const ModelCount count = count_model(rv.cfg);
    const double deviation = count.flops_per_token / plan.target - 1;

    const std::vector<uint64_t> seeds = exp.seeds.empty() ? std::vector<uint64_t>{rv.cfg.seed} : exp.seeds;
    for (uint64_t seed : seeds) {
      PlannedRun run;
      run.variant = v.name;
      run.name = expand_template(exp.run_name, {{"variant", v.name}, {"seed", std::to_string(seed)}},
                                 exp.run_name_where);
      std::string problem = run_name_problem(run.name);
      DSMOE_CHECK(problem.empty(), exp.run_name_where, ": ", problem);
      for (const PlannedRun& prev : plan.runs)
        DSMOE_CHECK(prev.name != run.name, exp.run_name_where, ": runs of ", prev.variant, " and ", v.name,
                    " are both named '", run.name, "' (use {variant} and {seed})");
      run.cfg = rv.cfg;
      run.cfg.name = v.name;
      run.cfg.seed = seed;
      run.cfg.out = plan.dir + "/" + run.name;
      run.count = count;
      run.deviation = deviation;
      run.tokens = run.cfg.train.steps * run.cfg.train.batch_size * run.cfg.model.seq_len;
      run.solved_key = v.free_key;
      run.solved_value = solved;
      plan.runs.push_back(run);
    }
  }
  return plan;
}

void keep_variants(SweepPlan& plan, const std::string& list) {
  const std::vector<std::string>& known = plan.variants;
  std::vector<std::string> wanted;
  for (size_t at = 0; at <= list.size();) {
    const size_t end = std::min(list.find(',', at), list.size());
    const std::string name = list.substr(at, end - at);
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      std::string names;
      for (const std::string& k : known) names += (names.empty() ? "" : ", ") + k;
      throw Error(cat("--only: ", plan.experiment, " has no variant '", name, "' (its variants: ", names, ")"));
    }
    wanted.push_back(name);
    at = end + 1;
  }
  const auto unwanted = [&](const std::string& variant) {
    return std::find(wanted.begin(), wanted.end(), variant) == wanted.end();
  };
  plan.runs.erase(std::remove_if(plan.runs.begin(), plan.runs.end(), [&](const PlannedRun& r) { return unwanted(r.variant); }),
                  plan.runs.end());
}

std::vector<std::string> out_of_tolerance(const SweepPlan& plan) {
  std::vector<std::string> out;
  for (size_t i = 0; i < plan.runs.size(); ++i) {
    const PlannedRun& r = plan.runs[i];
    const bool first_of_variant = i == 0 || plan.runs[i - 1].variant != r.variant;  // a variant's seeds are adjacent
    if (plan.iso && first_of_variant && std::fabs(r.deviation) > plan.tolerance)
      out.push_back(r.variant + ": " + percent(r.deviation));
  }
  return out;
}

void check_tolerance(const SweepPlan& plan) {
  const std::vector<std::string> findings = out_of_tolerance(plan);
  if (findings.empty()) return;
  std::string list;
  for (const auto& v : findings) list += "\n  " + v;
  throw Error(cat(plan.experiment, ": FLOPs per token differ from the target by more than the tolerance ",
                  percent(plan.tolerance).substr(1), ":", list,
                  "\n(set a free key for these variants, raise iso_flops.tolerance, or pass --ignore-tolerance)"));
}

}  // namespace dsmoe
