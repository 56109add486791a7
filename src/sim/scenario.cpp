#include "sim/scenario.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdlib>

#include "sim/bench_record.h"
#include "util/check.h"

namespace dsmoe::sim {
namespace {

struct Ctx {
  std::string file;
  std::string at(const YAML::Node& n, const std::string& key) const {
    return cat(file, ":", n.Mark().line + 1, ": ", key);
  }
};

double number(const Ctx& c, const YAML::Node& n, const std::string& key) {
  DSMOE_CHECK(n.IsScalar(), c.at(n, key), ": expected a number");
  const std::string v = n.Scalar();
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  DSMOE_CHECK(!v.empty() && *end == '\0' && std::isfinite(x), c.at(n, key), ": expected a number, got '", v, "'");
  return x;
}

std::string text(const Ctx& c, const YAML::Node& n, const std::string& key) {
  DSMOE_CHECK(n.IsScalar(), c.at(n, key), ": expected a string");
  return n.Scalar();
}

std::vector<std::string> strings(const Ctx& c, const YAML::Node& n, const std::string& key) {
  DSMOE_CHECK(n.IsSequence(), c.at(n, key), ": expected a list of key=value");
  std::vector<std::string> out;
  for (const auto& item : n) {
    const std::string s = text(c, item, key);
    DSMOE_CHECK(s.find('=') != std::string::npos, c.at(item, key), ": expected key=value, got '", s, "'");
    out.push_back(s);
  }
  return out;
}

void only(const Ctx& c, const YAML::Node& map, const std::string& where, std::initializer_list<const char*> keys) {
  for (const auto& kv : map) {
    const std::string k = kv.first.Scalar();
    bool ok = false;
    for (const char* a : keys) ok |= k == a;
    DSMOE_CHECK(ok, c.at(kv.first, where + k), ": unknown key");
  }
}

}  // namespace

std::string routing_label(const std::string& given) {
  const bool all = given.size() > 4 && given.substr(given.size() - 4) == "@all";
  const std::string spec = all ? given.substr(0, given.size() - 4) : given;
  if (spec.size() > 3 && spec.substr(spec.size() - 3) == ".h5") {
    std::string dir = spec.substr(0, spec.find_last_of('/') == std::string::npos ? 0 : spec.find_last_of('/'));
    const size_t slash = dir.find_last_of('/');
    return (dir.empty() ? spec : dir.substr(slash == std::string::npos ? 0 : slash + 1)) + (all ? "@all" : "");
  }
  return spec;
}

Scenario load_scenario(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    throw Error(cat(path, ": cannot read"));
  } catch (const YAML::Exception& e) {
    throw Error(cat(path, ":", e.mark.line + 1, ": ", e.msg));
  }
  const Ctx c{path};
  DSMOE_CHECK(root.IsMap() && root["simulate"], path, ": not a simulation file (no top-level 'simulate' key)");
  only(c, root, "", {"simulate", "config", "set", "compute_rate", "rate_scale", "clusters", "routing", "variants", "out"});
  Scenario s;
  s.name = text(c, root["simulate"], "simulate");
  DSMOE_CHECK(root["config"], path, ": config: missing (the run config to simulate)");
  s.config = text(c, root["config"], "config");
  if (root["set"]) s.set = strings(c, root["set"], "set");
  if (root["compute_rate"]) s.compute_rate = text(c, root["compute_rate"], "compute_rate");
  if (root["rate_scale"]) s.rate_scale = number(c, root["rate_scale"], "rate_scale");
  s.out = root["out"] ? text(c, root["out"], "out") : "runs/" + s.name + "/simulate.h5";
  DSMOE_CHECK(root["clusters"] && root["clusters"].IsSequence() && root["clusters"].size() > 0, path,
              ": clusters: expected a non-empty list");
  int i = 0;
  for (const auto& n : root["clusters"]) {
    const std::string key = cat("clusters[", i++, "].");
    DSMOE_CHECK(n.IsMap(), c.at(n, key), ": expected a mapping with gpus, gpus_per_node, ...");
    only(c, n, key, {"gpus", "gpus_per_node", "intra_bw", "inter_bw", "latency", "set"});
    ScenarioCluster sc;
    DSMOE_CHECK(n["gpus"], c.at(n, key + "gpus"), ": missing");
    const double g = number(c, n["gpus"], key + "gpus");
    DSMOE_CHECK(g >= 1 && g == std::floor(g), c.at(n["gpus"], key + "gpus"), ": expected a positive integer");
    sc.cluster.gpus = static_cast<int>(g);
    if (n["gpus_per_node"]) sc.cluster.gpus_per_node = static_cast<int>(number(c, n["gpus_per_node"], key + "gpus_per_node"));
    if (n["intra_bw"]) sc.cluster.intra_bw = number(c, n["intra_bw"], key + "intra_bw"), sc.intra_given = true;
    if (n["inter_bw"]) sc.cluster.inter_bw = number(c, n["inter_bw"], key + "inter_bw");
    if (n["latency"]) sc.cluster.latency = number(c, n["latency"], key + "latency");
    if (n["set"]) sc.set = strings(c, n["set"], key + "set");
    try {
      check_cluster(sc.cluster);
    } catch (const Error& e) {
      throw Error(cat(c.at(n, key.substr(0, key.size() - 1)), ": ", e.what()));
    }
    s.clusters.push_back(sc);
  }
  DSMOE_CHECK(root["routing"] && root["routing"].IsSequence() && root["routing"].size() > 0, path,
              ": routing: expected a non-empty list");
  i = 0;
  for (const auto& n : root["routing"]) {
    const std::string key = cat("routing[", i++, "]");
    ScenarioRouting r;
    if (n.IsMap()) {
      only(c, n, key + ".", {"name", "source", "set"});
      DSMOE_CHECK(n["source"], c.at(n, key + ".source"), ": missing");
      r.source = text(c, n["source"], key + ".source");
      r.name = n["name"] ? text(c, n["name"], key + ".name") : routing_label(r.source);
      if (n["set"]) r.set = strings(c, n["set"], key + ".set");
    } else {
      r.source = text(c, n, key);
      r.name = routing_label(r.source);
    }
    s.routing.push_back(r);
  }
  if (root["variants"]) {
    DSMOE_CHECK(root["variants"].IsSequence(), c.at(root["variants"], "variants"), ": expected a list");
    i = 0;
    for (const auto& n : root["variants"]) {
      const std::string key = cat("variants[", i++, "].");
      DSMOE_CHECK(n.IsMap() && n["name"], c.at(n, key + "name"), ": missing");
      only(c, n, key, {"name", "set", "dispatcher"});
      ScenarioVariant v;
      v.name = text(c, n["name"], key + "name");
      if (n["set"]) v.set = strings(c, n["set"], key + "set");
      if (n["dispatcher"]) {
        const std::string d = text(c, n["dispatcher"], key + "dispatcher");
        DSMOE_CHECK(d == "gpu" || d == "node", c.at(n["dispatcher"], key + "dispatcher"), ": expected gpu or node, got '", d, "'");
        v.node_dedup = d == "node";
      }
      s.variants.push_back(v);
    }
  }
  if (s.variants.empty()) s.variants.push_back({"base", {}});
  return s;
}

Rates rates_from(const std::string& spec, double scale, double* measured_bw) {
  DSMOE_CHECK(scale > 0, "--rate-scale must be positive, got ", scale);
  Rates r;
  *measured_bw = 0;
  if (spec.empty()) {
    r.compute *= scale;
    return r;
  }
  char* end = nullptr;
  const double x = std::strtod(spec.c_str(), &end);
  if (*end == '\0') {
    DSMOE_CHECK(x > 0 && std::isfinite(x), "--compute-rate: expected a positive FLOP/s or a bench record, got '", spec, "'");
    r.compute = x * scale;
    r.compute_from = cat("given");
    return r;
  }
  const BenchRecord b = read_bench_record(spec);
  r.compute = b.compute_flops_per_rank * scale;
  r.compute_from = cat("measured: ", spec, ", ", b.backend, ", ", b.world_size, " rank", b.world_size > 1 ? "s" : "",
                       scale != 1 ? cat(", x", scale) : std::string());
  r.backend = b.backend;
  r.overlap = b.backend == "cuda";
  if (b.a2a_dispatcher_ms > 0 && b.a2a_bare_ms > 0) r.dispatch_efficiency = b.a2a_bare_ms / b.a2a_dispatcher_ms;
  *measured_bw = b.a2a_bare_bw;
  return r;
}

}  // namespace dsmoe::sim
