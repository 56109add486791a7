#include "sweep/summary_output.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

#include "io/h5.h"
#include "util/check.h"
#include "util/format.h"

namespace dsmoe {
namespace {

constexpr double kNone = RunMetrics::kNone;

// A column of a table: a number (NaN: missing) or a text per row.
template <class Row>
struct Column {
  const char* name;
  double (*number)(const Analysis&, const Row&);
  std::string (*text)(const Analysis&, const Row&);
};

double mean_over(const std::vector<const RunMetrics*>& runs, double (*get)(const RunMetrics&)) {
  double sum = 0;
  int n = 0;
  for (const RunMetrics* r : runs)
    if (!std::isnan(get(*r))) sum += get(*r), ++n;
  return n ? sum / n : kNone;
}

// The per-run quantities; variants report their mean over the finished runs they rank by.
const std::vector<std::pair<const char*, double (*)(const RunMetrics&)>>& run_quantities() {
  using R = RunMetrics;
  static const std::vector<std::pair<const char*, double (*)(const RunMetrics&)>> q = {
      {"final_val_loss", [](const R& r) { return r.final_val_loss; }},
      {"best_val_loss", [](const R& r) { return r.best_val_loss; }},
      {"tokens", [](const R& r) { return static_cast<double>(r.tokens); }},
      {"tokens_per_s", [](const R& r) { return r.tokens_per_s; }},
      {"max_violation", [](const R& r) { return r.max_violation; }},
      {"device_max_violation", [](const R& r) { return r.device_max_violation; }},
      {"dead_experts", [](const R& r) { return r.dead_experts; }},
      {"load_cv", [](const R& r) { return r.load_cv; }},
      {"dropped_fraction", [](const R& r) { return r.dropped_fraction; }},
      {"params_active", [](const R& r) { return static_cast<double>(r.params_active); }},
      {"params_total", [](const R& r) { return static_cast<double>(r.params_total); }},
      {"flops_per_token", [](const R& r) { return r.flops_per_token; }},
  };
  return q;
}

// Whether the variant has an interval for its difference from the baseline.
bool compared(const VariantStats& v) { return v.method == "paired" || v.method == "welch"; }

double if_compared(const VariantStats& v, double x) { return compared(v) ? x : kNone; }

std::vector<Column<VariantStats>> variant_columns() {
  using A = Analysis;
  using V = VariantStats;
  std::vector<Column<V>> c = {
      {"variant", nullptr, [](const A&, const V& v) { return v.variant; }},
      {"n", [](const A&, const V& v) { return static_cast<double>(v.value.n); }, nullptr},
      {"mean", [](const A&, const V& v) { return v.value.mean; }, nullptr},
      {"std", [](const A&, const V& v) { return v.value.std; }, nullptr},
      {"ci_low", [](const A&, const V& v) { return v.value.low; }, nullptr},
      {"ci_high", [](const A&, const V& v) { return v.value.high; }, nullptr},
      {"delta_method", nullptr, [](const A&, const V& v) { return v.method; }},
      {"delta_mean", [](const A&, const V& v) { return v.method == "baseline" ? kNone : v.delta.mean; }, nullptr},
      {"delta_ci_low", [](const A&, const V& v) { return if_compared(v, v.delta.low); }, nullptr},
      {"delta_ci_high", [](const A&, const V& v) { return if_compared(v, v.delta.high); }, nullptr},
      {"delta_n", [](const A&, const V& v) { return if_compared(v, v.delta.n); }, nullptr},
      {"delta_df", [](const A&, const V& v) { return if_compared(v, v.delta.df); }, nullptr},
      {"p_value", [](const A&, const V& v) { return if_compared(v, v.delta.p_value); }, nullptr},
      {"verdict", nullptr, [](const A&, const V& v) { return v.verdict; }},
      {"seeds_for_power", [](const A&, const V& v) { return v.seeds_for_power ? v.seeds_for_power : kNone; }, nullptr},
      {"seeds", nullptr, [](const A&, const V& v) {
         std::vector<std::string> s;
         for (const RunMetrics* r : v.runs) s.push_back(std::to_string(r->seed));
         return join(s, ";");
       }},
  };
  return c;
}

std::vector<Column<RunMetrics>> run_columns() {
  using A = Analysis;
  using R = RunMetrics;
  return {
      {"run", nullptr, [](const A&, const R& r) { return r.run; }},
      {"variant", nullptr, [](const A&, const R& r) { return r.variant; }},
      {"seed", [](const A&, const R& r) { return static_cast<double>(r.seed); }, nullptr},
      {"finished", [](const A&, const R& r) { return r.finished() ? 1.0 : 0.0; }, nullptr},
      {"step", [](const A&, const R& r) { return static_cast<double>(r.step); }, nullptr},
      {"steps", [](const A&, const R& r) { return static_cast<double>(r.steps); }, nullptr},
      {"value", [](const A& a, const R& r) { return r.*a.metric->field; }, nullptr},
      {"final_eval_step", [](const A&, const R& r) { return static_cast<double>(r.final_eval_step); }, nullptr},
      {"device_groups", [](const A&, const R& r) { return static_cast<double>(r.device_groups); }, nullptr},
      {"first_moe_layer", [](const A&, const R& r) { return static_cast<double>(r.first_moe_layer); }, nullptr},
      {"n_routed", [](const A&, const R& r) { return static_cast<double>(r.n_routed); }, nullptr},
      {"dsmoe_version", nullptr, [](const A&, const R& r) { return r.version; }},
      {"device", nullptr, [](const A&, const R& r) { return r.device; }},
  };
}

// "%.*f", or "-" for a missing value.
std::string num(double x, int decimals) {
  if (std::isnan(x)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, x);
  return buf;
}

// Enough decimals that the smallest spread or difference shows two significant digits.
int decimals_for(const Analysis& a) {
  double smallest = INFINITY;
  for (const VariantStats& v : a.ranked)
    for (double x : {v.value.std, v.delta.mean, v.delta.high - v.delta.low})
      if (std::isfinite(x) && x != 0) smallest = std::min(smallest, std::fabs(x));
  if (!std::isfinite(smallest)) return 4;
  return std::clamp(static_cast<int>(std::ceil(-std::log10(smallest))) + 1, 2, 8);
}

// Rows of cells, aligned: the first `left` columns to the left, the rest to the right.
std::string table(const std::vector<std::vector<std::string>>& rows, size_t left, const std::string& indent) {
  std::vector<size_t> width;
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], row[i].size());
    }
  std::string out;
  for (const auto& row : rows) {
    std::string line = indent;
    for (size_t i = 0; i < row.size(); ++i) {
      const std::string pad(width[i] - row[i].size(), ' ');
      line += (i ? "  " : "") + (i < left ? row[i] + pad : pad + row[i]);
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

std::string percent(double x) { return num(100 * x, 0) + " %"; }

std::string verdict_text(const Analysis& a, const VariantStats& v) {
  if (!v.verdict.empty()) return v.verdict;
  const bool baseline_ranked = std::any_of(a.ranked.begin(), a.ranked.end(),
                                           [&](const VariantStats& x) { return x.variant == a.baseline; });
  return baseline_ranked ? "n/a (one seed a side)" : "-";
}

std::string ranking_text(const Analysis& a) {
  const int d = decimals_for(a);
  const std::string ci = num(100 * a.confidence, 0) + " % CI";
  std::vector<std::vector<std::string>> rows = {
      {"rank", "variant", "n", "mean", "std", ci, "delta", ci + " of delta", "test", "p", "verdict"}};
  for (size_t i = 0; i < a.ranked.size(); ++i) {
    const VariantStats& v = a.ranked[i];
    const std::string test = v.method == "paired" ? cat("paired n=", v.delta.n)
                             : v.method == "welch" ? "Welch"
                             : v.method == "baseline" ? "baseline"
                                                     : "-";
    rows.push_back({std::to_string(i + 1), v.variant, std::to_string(v.value.n), num(v.value.mean, d),
                    num(v.value.std, d), std::isnan(v.value.low) ? "-" : "[" + num(v.value.low, d) + ", " + num(v.value.high, d) + "]",
                    v.method == "baseline" ? "" : num(v.delta.mean, d),
                    compared(v) ? "[" + num(v.delta.low, d) + ", " + num(v.delta.high, d) + "]" : "-", test,
                    compared(v) ? num(v.delta.p_value, 3) : "", verdict_text(a, v)});
  }
  std::string out = table(rows, 2, "");
  out += cat("\nper seed (", a.metric->name, ", finished runs):\n");
  std::vector<std::vector<std::string>> seeds;
  for (const VariantStats& v : a.ranked) {
    std::vector<std::string> row = {v.variant};
    for (const RunMetrics* r : v.runs) row.push_back(cat("s", r->seed, " ", num(r->*a.metric->field, d)));
    seeds.push_back(row);
  }
  out += table(seeds, 100, "  ");
  std::vector<std::vector<std::string>> power;
  for (const VariantStats& v : a.ranked)
    if (v.seeds_for_power) power.push_back({v.variant, std::to_string(v.seeds_for_power)});
  if (!power.empty())
    out += cat("\nseeds a side to resolve each unresolved paired difference with ", percent(kPlanningPower),
               " probability, were the true\ndifference and its spread those observed (a rough figure: it rests on "
               "the same few pairs):\n",
               table(power, 1, "  "));
  return out;
}

// Steps down, the compared variants across: each one's mean paired delta, * where it is resolved.
std::string curve_text(const Analysis& a) {
  std::vector<const VariantStats*> compared;
  std::map<int64_t, std::map<const VariantStats*, const CurvePoint*>> at;
  for (const VariantStats& v : a.ranked) {
    if (v.curve.empty()) continue;
    compared.push_back(&v);
    for (const CurvePoint& p : v.curve) at[p.step][&v] = &p;
  }
  if (compared.empty()) return "";
  const int d = decimals_for(a);
  std::vector<std::vector<std::string>> rows = {{"step"}};
  for (const VariantStats* v : compared) rows[0].push_back(v->variant);
  for (const auto& [step, points] : at) {
    std::vector<std::string> row = {std::to_string(step)};
    for (const VariantStats* v : compared) {
      const auto p = points.find(v);
      row.push_back(p == points.end() ? "-"
                                      : cat(p->second->delta.mean > 0 ? "+" : "", num(p->second->delta.mean, d),
                                            p->second->verdict == "unresolved" ? " " : "*"));
    }
    rows.push_back(row);
  }
  return cat("\nvalidation loss minus the baseline's at each evaluation, paired over the seeds evaluated there (",
             "* where the ", num(100 * a.confidence, 0), " % interval excludes 0; curves.csv has the intervals):\n",
             table(rows, 1, "  "));
}

std::string balance_text(const Analysis& a) {
  std::vector<std::vector<std::string>> rows = {{"variant", "MaxVio", "device MaxVio", "groups", "dead experts", "load CV",
                                                 "dropped", "tokens/s", "tokens", "active params", "FLOPs/token"}};
  for (const VariantStats& v : a.ranked) {
    const auto mean = [&](double (*get)(const RunMetrics&)) { return mean_over(v.runs, get); };
    rows.push_back({v.variant, num(mean([](const RunMetrics& r) { return r.max_violation; }), 3),
                    num(mean([](const RunMetrics& r) { return r.device_max_violation; }), 3),
                    v.runs.front()->n_routed ? std::to_string(v.runs.front()->device_groups) : "-",
                    num(mean([](const RunMetrics& r) { return r.dead_experts; }), 1),
                    num(mean([](const RunMetrics& r) { return r.load_cv; }), 3),
                    num(mean([](const RunMetrics& r) { return r.dropped_fraction; }), 4),
                    num(mean([](const RunMetrics& r) { return r.tokens_per_s; }), 0),
                    fmt_count(static_cast<int64_t>(mean([](const RunMetrics& r) { return static_cast<double>(r.tokens); }))),
                    fmt_count(v.runs.front()->params_active), cat(num(v.runs.front()->flops_per_token / 1e6, 3), "M")});
  }
  return table(rows, 1, "  ");
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

void write_numbers(hid_t loc, const std::string& path, const std::vector<double>& values) {
  const int64_t n = static_cast<int64_t>(values.size());
  h5::write_rows(h5::create_dataset(loc, path, H5T_IEEE_F64LE, {n}), H5T_NATIVE_DOUBLE, 0, {n}, values.data());
}

// A table as named columns of numbers or texts, with the run quantities appended (per run, or
// the mean over a variant's runs).
struct Table {
  std::vector<std::string> names;
  std::vector<bool> numeric;
  std::vector<std::vector<std::string>> text;  // [column][row]
  std::vector<std::vector<double>> number;     // [column][row]
};

template <class Row, class Runs>
Table make_table(const Analysis& a, const std::vector<Column<Row>>& columns, const std::vector<const Row*>& rows,
                 Runs runs_of) {
  Table t;
  for (const auto& c : columns) {
    t.names.push_back(c.name);
    t.numeric.push_back(c.number != nullptr);
    t.text.emplace_back();
    t.number.emplace_back();
    for (const Row* r : rows) {
      if (c.number) t.number.back().push_back(c.number(a, *r));
      else t.text.back().push_back(c.text(a, *r));
    }
  }
  for (const auto& [name, get] : run_quantities()) {
    t.names.push_back(name);
    t.numeric.push_back(true);
    t.text.emplace_back();
    t.number.emplace_back();
    for (const Row* r : rows) t.number.back().push_back(mean_over(runs_of(*r), get));
  }
  return t;
}

Table variant_table(const Analysis& a) {
  std::vector<const VariantStats*> rows;
  for (const VariantStats& v : a.ranked) rows.push_back(&v);
  return make_table(a, variant_columns(), rows, [](const VariantStats& v) { return v.runs; });
}

Table run_table(const Analysis& a) {
  std::vector<const RunMetrics*> rows;
  for (const RunMetrics& r : a.runs) rows.push_back(&r);
  return make_table(a, run_columns(), rows, [](const RunMetrics& r) { return std::vector<const RunMetrics*>{&r}; });
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

// Round-trips through strtod.
std::string exact(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}

std::string csv(const Table& t) {
  std::string out = join(t.names, ",") + "\n";
  const size_t rows = t.numeric[0] ? t.number[0].size() : t.text[0].size();
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < t.names.size(); ++c) {
      if (c) out += ",";
      if (!t.numeric[c]) out += csv_field(t.text[c][r]);
      else if (!std::isnan(t.number[c][r])) out += exact(t.number[c][r]);
    }
    out += "\n";
  }
  return out;
}

// A row per (variant, evaluation step) of the variants' loss curves against the baseline.
Table curve_table(const Analysis& a) {
  Table t;
  t.names = {"variant", "step", "n", "delta_mean", "delta_ci_low", "delta_ci_high", "p_value", "verdict"};
  t.numeric = {false, true, true, true, true, true, true, false};
  t.text.resize(t.names.size());
  t.number.resize(t.names.size());
  for (const VariantStats& v : a.ranked)
    for (const CurvePoint& p : v.curve) {
      t.text[0].push_back(v.variant);
      const double row[] = {static_cast<double>(p.step), static_cast<double>(p.delta.n), p.delta.mean, p.delta.low,
                            p.delta.high, p.delta.p_value};
      for (size_t c = 1; c <= 6; ++c) t.number[c].push_back(row[c - 1]);
      t.text[7].push_back(p.verdict);
    }
  return t;
}

void write_table(hid_t f, const std::string& group, const Table& t) {
  for (size_t c = 0; c < t.names.size(); ++c) {
    const std::string path = group + "/" + t.names[c];
    if (t.numeric[c]) write_numbers(f, path, t.number[c]);
    else write_strings(f, path, t.text[c]);
  }
}

}  // namespace

std::string analysis_text(const Analysis& a) {
  const auto unfinished = a.unfinished();
  std::string out = cat(a.experiment, ": ", a.runs.size(), " runs in ", a.dir, " (", a.runs.size() - unfinished.size(),
                        " finished, ", unfinished.size(), " unfinished, ", a.not_started.size(), " not started)\n");
  out += cat("metric: ", a.metric->label, ", ", a.metric->lower_is_better ? "lower" : "higher", " is better; ",
             num(100 * a.confidence, 0), " % confidence intervals from the t distribution\n");
  out += cat("baseline: ", a.baseline, " (", a.baseline_from, "); delta = variant - baseline, paired over the seeds ",
             "both have, else Welch's; 'unresolved': the interval holds 0\n\n");
  out += a.ranked.empty() ? std::string("no finished run to rank yet\n") : ranking_text(a);
  if (!a.ranked.empty()) {
    out += cat("\nexpert balance over the last ", num(100 * kBalanceWindow, 0),
               " % of each run's steps and cost, means over the finished runs above:\n");
    out += balance_text(a);
    out += curve_text(a);
  }
  std::vector<std::string> unranked;
  for (const std::string& v : a.order)
    if (std::none_of(a.ranked.begin(), a.ranked.end(), [&](const VariantStats& x) { return x.variant == v; }))
      unranked.push_back(v);
  if (!unranked.empty())
    out += cat("\nnot ranked (no finished run with a ", a.metric->name, "): ", join(unranked, ", "), "\n");
  if (!unfinished.empty()) {
    out += "\nunfinished runs (in no statistic above):\n";
    std::vector<std::vector<std::string>> rows;
    for (const RunMetrics* r : unfinished)
      rows.push_back({r->run, cat("step ", r->step, "/", r->steps), percent(static_cast<double>(r->step) / r->steps),
                      cat(a.metric->name, " ", num(r->*a.metric->field, 4),
                          std::isnan(r->final_val_loss) ? "" : cat(" (last eval at step ", r->final_eval_step, ")"))});
    out += table(rows, 4, "  ");
  }
  if (!a.not_started.empty()) out += cat("\nnot started: ", join(a.not_started, ", "), "\n");
  if (!a.foreign.empty())
    out += cat("\nrun folders the experiment does not define (not analysed): ", join(a.foreign, ", "), "\n");
  for (const std::string& s : a.skipped) out += cat("skipped ", s, "\n");
  for (const std::string& n : a.notes) out += cat("note: ", n, "\n");
  return out;
}

std::string variants_csv(const Analysis& a) { return csv(variant_table(a)); }
std::string runs_csv(const Analysis& a) { return csv(run_table(a)); }
std::string curves_csv(const Analysis& a) { return csv(curve_table(a)); }

void write_summary_h5(const std::string& path, const Analysis& a) {
  h5::silence_errors();
  const std::string tmp = path + ".tmp";
  try {
    h5::Handle f = h5::create_file(tmp);
    h5::write_attr(f, "experiment", a.experiment);
    h5::write_attr(f, "metric", std::string(a.metric->name));
    h5::write_attr(f, "metric_label", std::string(a.metric->label));
    h5::write_attr_int(f, "lower_is_better", a.metric->lower_is_better ? 1 : 0);
    h5::write_attr(f, "baseline", a.baseline);
    h5::write_attr_double(f, "confidence", a.confidence);
    write_strings(f, "order/variant", a.order);
    write_table(f, "variants", variant_table(a));
    write_table(f, "runs", run_table(a));
    write_table(f, "curves", curve_table(a));
    DSMOE_CHECK(f.close() >= 0, "cannot write it out");
  } catch (const Error& e) {
    throw Error(cat(tmp, ": ", e.what()));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  DSMOE_CHECK(!ec, path, ": cannot rename ", tmp, " to it: ", ec.message());
}

}  // namespace dsmoe
