#include "sweep/run_identity.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "config/config_keys.h"
#include "io/checkpoint.h"
#include "train/optimizer.h"
#include "util/check.h"

namespace dsmoe {
namespace {

namespace fs = std::filesystem;

// What the folder was trained under: the checkpoint's config and step, or without one, the
// config.yaml of an attempt that wrote metrics. Nothing when nothing was trained there.
struct Previous {
  std::string from;  // the file it was read from
  std::optional<Config> cfg;  // empty when that file cannot be read
  std::string problem;        // why not
  int64_t step = 0;
};

std::optional<Previous> previous_run(const std::string& out) {
  Previous p;
  const std::string ckpt = out + "/checkpoint.h5", yaml = out + "/config.yaml";
  try {
    if (fs::exists(ckpt)) {
      p.from = ckpt;
      const CheckpointMeta meta = read_checkpoint_meta(ckpt);
      p.step = meta.step;
      p.cfg = parse_config(meta.config_yaml, ckpt + " (config)");
    } else if (fs::exists(out + "/metrics.h5") && fs::exists(yaml)) {
      p.from = yaml;
      std::ifstream f(yaml);
      std::stringstream text;
      text << f.rdbuf();
      p.cfg = parse_config(text.str(), yaml);
    } else {
      return std::nullopt;
    }
  } catch (const Error& e) {
    p.cfg.reset();
    p.problem = e.what();
  }
  return p;
}

std::string lr_text(double lr) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", lr);
  return buf;
}

}  // namespace

bool result_neutral_key(const std::string& key) {
  // `out` may be written relative or absolute (sweep or submit); the folder is the same. A sharded
  // optimizer updates every element as an unsharded one does (params/optimizer_shard.h), and
  // recomputed activations are the stored ones.
  for (const char* k : {"name", "out", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
                        "train.recompute", "parallel.shard_optimizer"})
    if (key == k) return true;
  return false;
}

std::vector<std::string> config_differences(const Config& a, const Config& b) {
  std::vector<std::string> out;
  for (const auto& key : config_internal::config_keys())
    if (!key.equal(a, b)) out.push_back(cat(key.path, ": ", key.show(a), " -> ", key.show(b)));
  return out;
}

std::vector<std::string> check_run_folders(const SweepPlan& plan) {
  std::vector<std::string> notes, refused;
  for (const PlannedRun& run : plan.runs) {
    const std::optional<Previous> prev = previous_run(run.cfg.out);
    if (!prev) continue;
    std::vector<std::string> changed;
    if (!prev->cfg) {
      changed.push_back(cat("cannot read the config it ran under: ", prev->problem));
    } else {
      for (const std::string& d : config_differences(*prev->cfg, run.cfg)) {
        const std::string key = d.substr(0, d.find(':'));
        if (!result_neutral_key(key) && key != "train.steps") changed.push_back(d);
      }
      const int64_t was = prev->cfg->train.steps, now = run.cfg.train.steps;
      if (was != now && prev->step > now)
        changed.push_back(cat("train.steps: ", was, " -> ", now, ", below its checkpoint's step ", prev->step));
      else if (was != now && changed.empty())
        notes.push_back(cat(run.name, ": train.steps ", was, " -> ", now, ": resumes at step ", prev->step,
                            " with the ", run.cfg.train.schedule, " schedule recomputed for ", now,
                            " steps (lr at step ", prev->step, ": ", lr_text(learning_rate(prev->cfg->train, prev->step)),
                            " before, ", lr_text(learning_rate(run.cfg.train, prev->step)), " now)"));
    }
    if (changed.empty()) continue;
    std::string text = cat(run.cfg.out, " (", prev->from, "):");
    for (const std::string& c : changed) text += "\n    " + c;
    refused.push_back(text);
  }
  if (refused.empty()) return notes;
  std::string list;
  for (const std::string& r : refused) list += "\n  " + r;
  throw Error(cat(plan.experiment, ": ", refused.size(), " run folder(s) hold a run of another config than the ",
                  "experiment now gives them (resuming would continue that run under the new settings):", list,
                  "\nTo keep them, give the experiment another name (`experiment:` in its file) or pass --runs-dir; ",
                  "to discard one, delete its folder (rm -r FOLDER)."));
}

}  // namespace dsmoe
