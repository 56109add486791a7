#include "sweep/run_table.h"

#include <cstdio>

#include "config/config_keys.h"
#include "util/check.h"
#include "util/format.h"

namespace dsmoe {
namespace {

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string json_number(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}

std::string format(const char* fmt, double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, fmt, x);
  return buf;
}

}  // namespace

std::string config_json(const Config& cfg) {
  // Keys of a section are contiguous in the key table.
  std::string out = "{", open;  // `open`: the section whose object is being written
  bool top_empty = true, section_empty = true;
  for (const auto& key : config_internal::config_keys()) {
    const size_t dot = key.path.find('.');
    const std::string section = dot == std::string::npos ? "" : key.path.substr(0, dot);
    if (section != open) {
      if (!open.empty()) out += "}";
      if (!section.empty()) out += std::string(top_empty ? "" : ", ") + json_string(section) + ": {";
      top_empty = section.empty() ? top_empty : false;
      section_empty = true;
      open = section;
    }
    bool& empty = section.empty() ? top_empty : section_empty;
    const std::string value = key.show(cfg);  // show_scalar: numbers and true/false are JSON already
    out += std::string(empty ? "" : ", ") + json_string(key.path.substr(dot == std::string::npos ? 0 : dot + 1)) +
           ": " + (key.is_string ? json_string(value) : value);
    empty = false;
  }
  if (!open.empty()) out += "}";
  return out + "}";
}

std::string run_table_text(const SweepPlan& plan) {
  std::string out = cat("experiment ", plan.experiment, ": ", plan.runs.size(), " runs under ", plan.dir, "\n",
                        "FLOPs per token target ", format("%.4g", plan.target), " (", plan.target_from, ")");
  if (plan.iso) out += ", tolerance " + format("%.2f %%", 100 * plan.tolerance);
  out += "\n";
  char line[512];
  std::snprintf(line, sizeof line, "%-28s %15s %15s %12s %10s %15s  %s\n", "run", "params", "active", "FLOPs/token",
                "vs target", "tokens", "solved");
  out += line;
  for (const PlannedRun& r : plan.runs) {
    const std::string solved = r.solved_key.empty() ? "" : cat(r.solved_key, " = ", r.solved_value);
    std::snprintf(line, sizeof line, "%-28s %15s %15s %12s %10s %15s  %s\n", r.name.c_str(),
                  fmt_count(r.count.params_total).c_str(), fmt_count(r.count.params_active).c_str(),
                  format("%.4g", r.count.flops_per_token).c_str(), format("%+.2f %%", 100 * r.deviation).c_str(),
                  fmt_count(r.tokens).c_str(), solved.c_str());
    out += line;
  }
  return out;
}

std::string run_table_json(const SweepPlan& plan) {
  std::string out = "[";
  for (size_t i = 0; i < plan.runs.size(); ++i) {
    const PlannedRun& r = plan.runs[i];
    const std::string solved = r.solved_key.empty() ? "null"
                                                     : cat("{\"key\": ", json_string(r.solved_key),
                                                           ", \"value\": ", r.solved_value, "}");
    out += cat(i ? ",\n " : "", "{\"name\": ", json_string(r.name), ", \"variant\": ", json_string(r.variant),
               ", \"seed\": ", r.cfg.seed, ", \"out\": ", json_string(r.cfg.out),
               ", \"params_total\": ", r.count.params_total, ", \"params_active\": ", r.count.params_active,
               ", \"flops_per_token\": ", json_number(r.count.flops_per_token),
               ", \"flops_deviation\": ", json_number(r.deviation), ", \"tokens\": ", r.tokens,
               ", \"solved\": ", solved, ", \"config\": ", config_json(r.cfg), "}");
  }
  return out + "]\n";
}

}  // namespace dsmoe
