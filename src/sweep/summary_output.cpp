#include "sweep/summary_output.h"

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "io/h5.h"
#include "util/check.h"

namespace dsmoe {
namespace {

struct VariantColumn {
  const char* name;    // in the CSV and summary.h5
  const char* header;  // in the text table
  const char* format;  // printf format of the text table
  double (*get)(const VariantSummary&);
};

struct RunColumn {
  const char* name;
  double (*get)(const RunMetrics&);
};

const std::vector<VariantColumn>& variant_columns() {
  using V = VariantSummary;
  static const std::vector<VariantColumn> columns = {
      {"runs", "runs", "%.0f", [](const V& v) { return v.runs; }},
      {"final_val_loss_mean", "val final", "%.4f", [](const V& v) { return v.final_val_loss_mean; }},
      {"final_val_loss_spread", "+-", "%.4f", [](const V& v) { return v.final_val_loss_spread; }},
      {"best_val_loss_mean", "val best", "%.4f", [](const V& v) { return v.best_val_loss_mean; }},
      {"best_val_loss_spread", "+-", "%.4f", [](const V& v) { return v.best_val_loss_spread; }},
      {"tokens", "tokens", "%.4g", [](const V& v) { return v.tokens; }},
      {"tokens_per_s", "tok/s", "%.0f", [](const V& v) { return v.tokens_per_s; }},
      {"max_violation_mean", "maxvio", "%.3f", [](const V& v) { return v.max_violation_mean; }},
      {"max_violation_max", "maxvio max", "%.3f", [](const V& v) { return v.max_violation_max; }},
      {"load_cv", "load CV", "%.3f", [](const V& v) { return v.load_cv; }},
      {"dropped_fraction", "dropped", "%.4f", [](const V& v) { return v.dropped_fraction; }},
      {"params_active", "active", "%.4g", [](const V& v) { return v.params_active; }},
      {"flops_per_token", "FLOPs/tok", "%.4g", [](const V& v) { return v.flops_per_token; }},
      {"progress", "done", "%.2f", [](const V& v) { return v.progress; }},
  };
  return columns;
}

const std::vector<RunColumn>& run_columns() {
  using R = RunMetrics;
  static const std::vector<RunColumn> columns = {
      {"seed", [](const R& r) { return static_cast<double>(r.seed); }},
      {"step", [](const R& r) { return static_cast<double>(r.step); }},
      {"steps", [](const R& r) { return static_cast<double>(r.steps); }},
      {"tokens", [](const R& r) { return static_cast<double>(r.tokens); }},
      {"tokens_per_s", [](const R& r) { return r.tokens_per_s; }},
      {"final_val_loss", [](const R& r) { return r.final_val_loss; }},
      {"best_val_loss", [](const R& r) { return r.best_val_loss; }},
      {"max_violation_mean", [](const R& r) { return r.max_violation_mean; }},
      {"max_violation_max", [](const R& r) { return r.max_violation_max; }},
      {"load_cv", [](const R& r) { return r.load_cv; }},
      {"dropped_fraction", [](const R& r) { return r.dropped_fraction; }},
  };
  return columns;
}

std::string field(const char* format, double x) {
  if (std::isnan(x)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, format, x);
  return buf;
}

void write_strings(hid_t loc, const std::string& path, const std::vector<std::string>& values) {
  h5::Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  DSMOE_CHECK(type.valid() && H5Tset_size(type, H5T_VARIABLE) >= 0 && H5Tset_cset(type, H5T_CSET_UTF8) >= 0,
              "cannot make a string type");
  std::vector<const char*> ptrs;
  for (const std::string& v : values) ptrs.push_back(v.c_str());
  const int64_t n = static_cast<int64_t>(values.size());
  h5::write_rows(h5::create_dataset(loc, path, type, {n}), type, 0, {n}, ptrs.data());
}

template <class Column, class Row>
void write_columns(hid_t loc, const std::string& group, const std::vector<Column>& columns,
                   const std::vector<Row>& rows) {
  const int64_t n = static_cast<int64_t>(rows.size());
  for (const auto& c : columns) {
    std::vector<double> values;
    for (const Row& r : rows) values.push_back(c.get(r));
    h5::write_rows(h5::create_dataset(loc, group + "/" + c.name, H5T_IEEE_F64LE, {n}), H5T_NATIVE_DOUBLE, 0, {n},
                   values.data());
  }
}

}  // namespace

std::string summary_text(const std::vector<VariantSummary>& variants) {
  size_t name_width = 7;
  for (const VariantSummary& v : variants) name_width = std::max(name_width, v.variant.size());
  auto cell = [](const std::string& text, size_t width) {
    return std::string(width > text.size() ? width - text.size() : 0, ' ') + text;
  };
  auto width = [](const char* header) { return std::max<size_t>(10, std::string(header).size()); };
  std::string out = "rank  variant" + std::string(name_width - 7, ' ');
  for (const auto& c : variant_columns()) out += " " + cell(c.header, width(c.header));
  out += "\n";
  for (size_t i = 0; i < variants.size(); ++i) {
    const VariantSummary& v = variants[i];
    out += cell(std::to_string(i + 1), 4) + "  " + v.variant + std::string(name_width - v.variant.size(), ' ');
    for (const auto& c : variant_columns()) out += " " + cell(field(c.format, c.get(v)), width(c.header));
    out += "\n";
  }
  return out;
}

std::string summary_csv(const std::vector<VariantSummary>& variants) {
  std::string out = "variant";
  for (const auto& c : variant_columns()) out += cat(",", c.name);
  out += "\n";
  for (const VariantSummary& v : variants) {
    out += v.variant;
    for (const auto& c : variant_columns()) out += "," + (std::isnan(c.get(v)) ? "" : field("%.17g", c.get(v)));
    out += "\n";
  }
  return out;
}

void write_summary_h5(const std::string& path, const std::string& experiment,
                      const std::vector<VariantSummary>& variants, const std::vector<RunMetrics>& runs) {
  h5::silence_errors();
  const std::string tmp = path + ".tmp";
  try {
    h5::Handle f = h5::create_file(tmp);
    h5::write_attr(f, "experiment", experiment);
    std::vector<std::string> names, run_names, run_variants;
    for (const VariantSummary& v : variants) names.push_back(v.variant);
    for (const RunMetrics& r : runs) run_names.push_back(r.run), run_variants.push_back(r.variant);
    write_strings(f, "variants/variant", names);
    write_columns(f, "variants", variant_columns(), variants);
    write_strings(f, "runs/run", run_names);
    write_strings(f, "runs/variant", run_variants);
    write_columns(f, "runs", run_columns(), runs);
    DSMOE_CHECK(f.close() >= 0, "cannot write it out");
  } catch (const Error& e) {
    throw Error(cat(tmp, ": ", e.what()));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  DSMOE_CHECK(!ec, path, ": cannot rename ", tmp, " to it: ", ec.message());
}

}  // namespace dsmoe
