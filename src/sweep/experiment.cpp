// Reading an experiment file: the top-level keys, the inline or file base, seeds, iso-FLOPs,
// then each sweep entry expanded into variants (sweep_entry.cpp).
#include "sweep/experiment.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "config/config_keys.h"
#include "sweep/name_template.h"
#include "sweep/sweep_entry.h"
#include "sweep/yaml_reader.h"

namespace dsmoe {
namespace {

namespace fs = std::filesystem;
using sweep_internal::describe;
using sweep_internal::Field;
using sweep_internal::Reader;

IsoFlops read_iso(const Reader& r, const Field& f, std::string& default_free) {
  DSMOE_CHECK(f.value.IsMap(), f.at(), ": expected a mapping, got ", describe(f.value));
  IsoFlops iso;
  iso.enabled = true;
  const std::vector<Field> fs = r.fields(f.value, "iso_flops.");
  Reader::expect_only(fs, {"reference", "target", "free", "tolerance"}, "iso_flops.");
  bool has_target = false;
  for (const Field& x : fs) {
    if (x.name == "iso_flops.reference") iso.reference = Reader::scalar(x), iso.where = x.where;
    if (x.name == "iso_flops.target") {
      iso.target = Reader::number<double>(x);
      DSMOE_CHECK(iso.target > 0, x.at(), ": must be > 0 FLOPs per token");
      has_target = true;
      iso.where = x.where;
    }
    if (x.name == "iso_flops.tolerance") {
      iso.tolerance = Reader::number<double>(x);
      DSMOE_CHECK(iso.tolerance >= 0, x.at(), ": must be >= 0");
    }
    if (x.name == "iso_flops.free") {
      default_free = Reader::scalar(x);
      std::string problem = integer_key_problem(default_free);
      DSMOE_CHECK(problem.empty(), x.at(), ": ", problem);
    }
  }
  const bool has_reference = !iso.reference.empty();
  DSMOE_CHECK(has_reference != has_target, f.at(),
              ": give either reference (a variant name) or target (FLOPs per token)");
  return iso;
}

std::vector<uint64_t> read_seeds(const Field& f) {
  DSMOE_CHECK(f.value.IsSequence() && f.value.size() > 0, f.at(), ": expected a non-empty list of seeds, got ",
              describe(f.value));
  std::vector<uint64_t> seeds;
  for (const auto& v : f.value) {
    Field item{f.name, v, f.where};
    uint64_t s = Reader::number<uint64_t>(item);
    for (uint64_t prev : seeds) DSMOE_CHECK(prev != s, f.at(), ": seed ", s, " is listed twice");
    seeds.push_back(s);
  }
  return seeds;
}

}  // namespace

Experiment parse_experiment(const std::string& yaml_text, const std::string& source) {
  Reader r(source);
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw Error(cat(r.where(e.mark), ": invalid YAML: ", e.msg));
  }
  DSMOE_CHECK(root.IsMap(), source, ": expected a mapping of experiment keys at the top level");
  const std::vector<Field> top = r.fields(root, "");
  // A run config given by mistake: its keys, and no sweep.
  if (std::none_of(top.begin(), top.end(), [](const Field& f) { return f.name == "sweep"; }))
    for (const Field& f : top)
      DSMOE_CHECK(!config_internal::find_key(f.name) && !config_internal::is_section(f.name), f.at(),
                  ": a run config's key: this is a run config, not an experiment file: train it with `dsmoe ",
                  "train FILE` (an experiment file has sweep:, see docs/experiments.md)");
  Reader::expect_only(top, {"experiment", "base", "seeds", "run_name", "ranks", "iso_flops", "sweep"}, "");
  auto find = [&](const std::string& name) -> const Field* {
    for (const Field& f : top)
      if (f.name == name) return &f;
    return nullptr;
  };

  Experiment exp;
  exp.source = source;
  exp.name = fs::path(source).stem().string();
  if (const Field* f = find("experiment")) {
    exp.name = Reader::scalar(*f);
    std::string problem = run_name_problem(exp.name);
    DSMOE_CHECK(problem.empty(), f->at(), ": ", problem);
  }
  if (const Field* f = find("base")) {
    if (f->value.IsMap()) {
      exp.base.source = source;
      exp.base_settings = r.settings(r.fields(f->value, ""));
    } else {
      fs::path path = Reader::scalar(*f);
      if (path.is_relative()) path = fs::path(source).parent_path() / path;
      try {
        exp.base = load_config(path.lexically_normal().string());
      } catch (const Error& e) {
        throw Error(cat(f->at(), ": ", e.what()));
      }
    }
  }
  if (const Field* f = find("seeds")) exp.seeds = read_seeds(*f);
  exp.run_name = "{variant}-s{seed}";  // with any number of seeds: adding seeds renames nothing
  exp.run_name_where = source + ": run_name (default)";
  if (const Field* f = find("run_name")) {
    exp.run_name = Reader::scalar(*f);
    exp.run_name_where = f->at();
    expand_template(exp.run_name, {{"variant", ""}, {"seed", ""}}, f->at());
  }
  if (const Field* f = find("ranks")) {
    exp.ranks = Reader::number<int>(*f);
    DSMOE_CHECK(exp.ranks >= 1, f->at(), ": must be >= 1, got ", exp.ranks);
  }
  std::string default_free;
  if (const Field* f = find("iso_flops")) exp.iso = read_iso(r, *f, default_free);

  const Field* sweep = find("sweep");
  DSMOE_CHECK(sweep, source, ": sweep: missing (the variants to compare)");
  DSMOE_CHECK(sweep->value.IsSequence() && sweep->value.size() > 0, sweep->at(),
              ": expected a non-empty list of variants, got ", describe(sweep->value));
  for (const auto& node : sweep->value)
    for (Variant& v : sweep_internal::read_sweep_entry(r, node, default_free)) {
      std::string problem = run_name_problem(v.name);
      DSMOE_CHECK(problem.empty(), v.where, ": name: ", problem);
      for (const Variant& prev : exp.variants)
        DSMOE_CHECK(prev.name != v.name, v.where, ": name: variant '", v.name, "' is already defined at ",
                    prev.where);
      if (v.name == exp.iso.reference) v.free_key.clear();  // the reference sets the target
      DSMOE_CHECK(exp.variants.size() < sweep_internal::kMaxVariants, v.where, ": more than ",
                  sweep_internal::kMaxVariants, " variants");
      exp.variants.push_back(v);
    }
  if (!exp.iso.reference.empty()) {
    bool found = false;
    for (const Variant& v : exp.variants) found = found || v.name == exp.iso.reference;
    DSMOE_CHECK(found, exp.iso.where, ": iso_flops.reference: no variant is named '", exp.iso.reference, "'");
  }
  return exp;
}

Experiment load_experiment(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::error_code ec;
  DSMOE_CHECK(f.is_open() && fs::is_regular_file(path, ec), path, ": cannot open experiment file");
  std::stringstream text;
  text << f.rdbuf();
  return parse_experiment(text.str(), path);
}

}  // namespace dsmoe
