// An experiment file (docs/experiments.md): a base config, the variants to compare (named
// variants, grids, zips), seeds, a run-name template, iso-FLOPs settings and the ranks per run.
// Parsing expands grids and zips, so `variants` is the flat list of what will be compared.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"
#include "sweep/settings.h"

namespace dsmoe {

struct Variant {
  std::string name;
  std::vector<Setting> settings;  // over the experiment's base settings, in order
  std::string free_key;           // iso-FLOPs: the integer key solved for this variant; "" = none
  std::string where;              // "file:line" of its sweep entry
};

struct IsoFlops {
  bool enabled = false;
  std::string reference;   // the variant whose FLOPs/token is the target; "" when `target` is given
  double target = 0;       // FLOPs per token
  double tolerance = 0.01; // largest |flops / target - 1| a sweep may have
  std::string where;       // "file:line" of the reference or target
};

struct Experiment {
  std::string name;    // runs go to <runs root>/<name>/<run>
  std::string source;  // the file
  Config base;                         // the base config file, or the defaults for an inline base
  std::vector<Setting> base_settings;  // an inline base, applied before every variant's settings
  std::vector<uint64_t> seeds;         // one run per seed; empty: one run with the base's seed
  std::string run_name;                // template over {variant} and {seed}; default {variant}-s{seed}
  std::string run_name_where;
  std::vector<Variant> variants;
  IsoFlops iso;
  int ranks = 1;  // MPI ranks of each run
};

// `source` names the text in errors; a relative `base:` path is taken relative to its folder.
Experiment parse_experiment(const std::string& yaml_text, const std::string& source);
Experiment load_experiment(const std::string& path);

}  // namespace dsmoe
