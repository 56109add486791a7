#include "sweep/manifest.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>

#include "sweep/run_state.h"
#include "util/check.h"

namespace dsmoe {

Manifest manifest_of(const SweepPlan& plan, const std::string& source) {
  Manifest m;
  m.experiment = plan.experiment;
  m.source = source;
  m.baseline = plan.baseline;
  m.baseline_from = plan.baseline_from;
  m.variants = plan.variants;
  for (const PlannedRun& r : plan.runs) m.runs.push_back({r.name, r.variant, r.cfg.seed, r.cfg.train.steps});
  return m;
}

std::string manifest_path(const std::string& experiment_dir) { return experiment_dir + "/sweep.yaml"; }

void write_manifest(const std::string& experiment_dir, const Manifest& m) {
  YAML::Emitter out;
  out << YAML::Comment("the runs of this experiment, written by dsmoe sweep / submit (dsmoe status and analyze read it)");
  out << YAML::BeginMap;
  out << YAML::Key << "experiment" << YAML::Value << m.experiment;
  out << YAML::Key << "source" << YAML::Value << m.source;
  out << YAML::Key << "baseline" << YAML::Value << m.baseline;
  out << YAML::Key << "baseline_from" << YAML::Value << m.baseline_from;
  out << YAML::Key << "variants" << YAML::Value << YAML::Flow << m.variants;
  out << YAML::Key << "runs" << YAML::Value << YAML::BeginSeq;
  for (const ManifestRun& r : m.runs)
    out << YAML::Flow << YAML::BeginMap << YAML::Key << "name" << YAML::Value << r.name << YAML::Key << "variant"
        << YAML::Value << r.variant << YAML::Key << "seed" << YAML::Value << r.seed << YAML::Key << "steps"
        << YAML::Value << r.steps << YAML::EndMap;
  out << YAML::EndSeq << YAML::EndMap;
  DSMOE_CHECK(out.good(), manifest_path(experiment_dir), ": cannot write: ", out.GetLastError());
  std::filesystem::create_directories(experiment_dir);
  write_file_atomically(manifest_path(experiment_dir), std::string(out.c_str()) + "\n");
}

std::optional<Manifest> read_manifest(const std::string& experiment_dir) {
  const std::string path = manifest_path(experiment_dir);
  if (!std::filesystem::exists(path)) return std::nullopt;
  try {
    const YAML::Node root = YAML::LoadFile(path);
    Manifest m;
    m.experiment = root["experiment"].as<std::string>();
    m.source = root["source"].as<std::string>();
    m.baseline = root["baseline"].as<std::string>();
    m.baseline_from = root["baseline_from"].as<std::string>();
    m.variants = root["variants"].as<std::vector<std::string>>();
    for (const YAML::Node& r : root["runs"])
      m.runs.push_back({r["name"].as<std::string>(), r["variant"].as<std::string>(), r["seed"].as<uint64_t>(),
                        r["steps"].as<int64_t>()});
    return m;
  } catch (const YAML::Exception& e) {
    throw Error(cat(path, ": damaged (", e.what(), "); delete it: the next dsmoe sweep or submit writes it again"));
  }
}

}  // namespace dsmoe
