#include "sim/bench_record.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "util/check.h"

namespace dsmoe::sim {
namespace {

std::string escaped(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    if (static_cast<unsigned char>(ch) >= 32) out += ch;
  }
  return out;
}

}  // namespace

double compute_rate(const BenchRecord& r) {
  // One rank: the whole step is its compute (router, dispatch planning, optimizer included, as
  // they will be at scale). Several: the step less the phases that exchange (they also hold
  // waiting for other ranks).
  const double ms = r.world_size == 1 ? r.ms_per_step : r.ms_compute;
  return ms > 0 && r.world_size > 0 ? r.flops_per_token * r.tokens_per_step / r.world_size / (ms / 1e3) : 0;
}

void write_bench_record(const std::string& path, BenchRecord r) {
  r.compute_flops_per_rank = compute_rate(r);
  if (r.a2a_dispatcher_ms > 0) r.a2a_dispatcher_bw = r.a2a_bytes_per_rank / (r.a2a_dispatcher_ms / 1e3);
  if (r.a2a_bare_ms > 0) r.a2a_bare_bw = r.a2a_bytes_per_rank / (r.a2a_bare_ms / 1e3);
  std::ostringstream o;
  o.precision(10);
  o << "{\n  \"format\": \"dsmoe-bench\",\n  \"name\": \"" << escaped(r.name) << "\",\n  \"backend\": \""
    << escaped(r.backend) << "\",\n  \"device\": \"" << escaped(r.device) << "\"";
  const std::pair<const char*, double> nums[] = {
      {"world_size", r.world_size}, {"ep_size", r.ep_size}, {"threads", r.threads}, {"steps", r.steps},
      {"warmup", r.warmup}, {"tokens_per_step", r.tokens_per_step}, {"tokens_per_s", r.tokens_per_s},
      {"ms_per_step", r.ms_per_step}, {"ms_compute", r.ms_compute}, {"ms_route", r.ms_route},
      {"ms_dispatch", r.ms_dispatch}, {"ms_combine", r.ms_combine}, {"ms_allreduce", r.ms_allreduce},
      {"flops_per_token", r.flops_per_token}, {"achieved_flops", r.achieved_flops},
      {"compute_flops_per_rank", r.compute_flops_per_rank}, {"peak_mem_bytes", r.peak_mem_bytes},
      {"max_rss_bytes", r.max_rss_bytes}, {"bytes_sent_per_step", r.bytes_sent_per_step},
      {"a2a_bytes_per_rank", r.a2a_bytes_per_rank}, {"a2a_dispatcher_ms", r.a2a_dispatcher_ms},
      {"a2a_bare_ms", r.a2a_bare_ms}, {"a2a_dispatcher_bw", r.a2a_dispatcher_bw}, {"a2a_bare_bw", r.a2a_bare_bw},
      {"ms_per_step_without_overlap", r.ms_per_step_without_overlap}};
  for (const auto& kv : nums) o << ",\n  \"" << kv.first << "\": " << kv.second;
  o << "\n}\n";
  std::ofstream out(path);
  out << o.str();
  out.close();
  DSMOE_CHECK(out.good(), path, ": cannot write the bench record");
}

std::map<std::string, std::string> parse_flat_json(const std::string& s, const std::string& source) {
  std::map<std::string, std::string> kv;
  size_t i = 0;
  auto ws = [&] {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  };
  auto fail = [&](const std::string& what) {
    throw Error(cat(source, ": not a flat JSON object (", what, " at offset ", i, ")"));
  };
  auto str = [&] {
    if (i >= s.size() || s[i] != '"') fail("expected a string");
    std::string out;
    for (++i; i < s.size() && s[i] != '"'; ++i) {
      if (s[i] == '\\' && i + 1 < s.size()) ++i;
      out += s[i];
    }
    if (i >= s.size()) fail("unterminated string");
    ++i;
    return out;
  };
  ws();
  if (i >= s.size() || s[i] != '{') fail("expected '{'");
  ++i;
  ws();
  if (i < s.size() && s[i] == '}') return kv;
  for (;;) {
    ws();
    const std::string key = str();
    ws();
    if (i >= s.size() || s[i] != ':') fail("expected ':'");
    ++i;
    ws();
    std::string value;
    if (i < s.size() && s[i] == '"') {
      value = str();
    } else {
      const size_t start = i;
      while (i < s.size() && s[i] != ',' && s[i] != '}' && !std::isspace(static_cast<unsigned char>(s[i]))) ++i;
      value = s.substr(start, i - start);
      if (value.empty()) fail("expected a value");
    }
    kv[key] = value;
    ws();
    if (i < s.size() && s[i] == ',') {
      ++i;
      continue;
    }
    if (i < s.size() && s[i] == '}') return kv;
    fail("expected ',' or '}'");
  }
}

BenchRecord read_bench_record(const std::string& path) {
  std::ifstream in(path);
  DSMOE_CHECK(in.good(), path, ": cannot open the bench record (write it with `dsmoe bench CONFIG --json ", path, "`)");
  std::stringstream ss;
  ss << in.rdbuf();
  const auto kv = parse_flat_json(ss.str(), path);
  auto text = [&](const char* key) {
    auto it = kv.find(key);
    DSMOE_CHECK(it != kv.end(), path, ": missing key '", key, "'");
    return it->second;
  };
  auto num = [&](const char* key) {
    const std::string v = text(key);
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    DSMOE_CHECK(!v.empty() && *end == '\0' && std::isfinite(x), path, ": key '", key, "': expected a number, got '",
                v, "'");
    return x;
  };
  BenchRecord r;
  r.name = text("name");
  r.backend = text("backend");
  r.device = kv.count("device") ? kv.at("device") : "";
  r.world_size = static_cast<int>(num("world_size"));
  r.ep_size = kv.count("ep_size") ? static_cast<int>(num("ep_size")) : r.world_size;
  r.threads = kv.count("threads") ? static_cast<int>(num("threads")) : 1;
  r.tokens_per_step = num("tokens_per_step");
  r.tokens_per_s = num("tokens_per_s");
  r.ms_per_step = num("ms_per_step");
  r.ms_compute = num("ms_compute");
  r.ms_dispatch = num("ms_dispatch");
  r.ms_combine = num("ms_combine");
  r.ms_allreduce = num("ms_allreduce");
  r.flops_per_token = num("flops_per_token");
  r.compute_flops_per_rank = compute_rate(r);
  DSMOE_CHECK(r.compute_flops_per_rank > 0, path, ": keys 'flops_per_token', 'tokens_per_step', 'ms_per_step' and "
              "'ms_compute' give no positive compute rate");
  r.peak_mem_bytes = num("peak_mem_bytes");
  r.bytes_sent_per_step = num("bytes_sent_per_step");
  r.a2a_bytes_per_rank = num("a2a_bytes_per_rank");
  r.a2a_dispatcher_ms = num("a2a_dispatcher_ms");
  r.a2a_bare_ms = num("a2a_bare_ms");
  r.a2a_dispatcher_bw = num("a2a_dispatcher_bw");
  r.a2a_bare_bw = num("a2a_bare_bw");
  return r;
}

}  // namespace dsmoe::sim
