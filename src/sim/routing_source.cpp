#include "sim/routing_source.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>

#include "io/h5.h"
#include "util/check.h"
#include "util/rng.h"

namespace dsmoe::sim {
namespace {

std::vector<double> normalized(std::vector<double> v, const std::string& what) {
  double s = 0;
  for (double x : v) s += x;
  DSMOE_CHECK(s > 0, what, ": the expert loads are all zero");
  for (double& x : v) x /= s;
  return v;
}

double parse_number(const std::string& text, const std::string& spec) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  DSMOE_CHECK(!text.empty() && *end == '\0' && std::isfinite(v), "--routing '", spec,
              "': expected zipf:S or zipf:S:SEED with numbers, got '", text, "'");
  return v;
}

}  // namespace

std::vector<double> resample_shares(const std::vector<double>& src, int n) {
  const int m = static_cast<int>(src.size());
  std::vector<double> out(n, 0.0);
  // Source expert a covers [a/m, (a+1)/m); target bin b covers [b/n, (b+1)/n). Work in units of
  // 1/(m*n) so the overlaps are exact.
  for (int b = 0; b < n; ++b) {
    const int64_t lo = (int64_t)b * m, hi = (int64_t)(b + 1) * m;
    for (int64_t a = lo / n; a < m && a * n < hi; ++a) {
      const int64_t overlap = std::min(hi, (a + 1) * n) - std::max(lo, a * (int64_t)n);
      if (overlap > 0) out[b] += src[a] * overlap / n;
    }
  }
  return out;
}

std::vector<std::vector<double>> mean_shares(const std::vector<double>& load, int rows, int layers, int n,
                                              int first_row) {
  std::vector<std::vector<double>> out(layers, std::vector<double>(n, 0.0));
  for (int r = first_row < 0 ? rows / 2 : first_row; r < rows; ++r)
    for (int l = 0; l < layers; ++l)
      for (int i = 0; i < n; ++i) out[l][i] += load[((size_t)r * layers + l) * n + i];
  return out;
}

RoutingProfile load_routing(const std::string& spec, int layers, int n_experts) {
  RoutingProfile p;
  p.source = spec;
  DSMOE_CHECK(layers >= 1 && n_experts >= 1, "--routing: the config has no MoE layer");
  if (spec == "uniform") {
    p.share.assign(layers, std::vector<double>(n_experts, 1.0 / n_experts));
    return p;
  }
  if (spec.rfind("zipf:", 0) == 0) {
    const std::string rest = spec.substr(5);
    const size_t colon = rest.find(':');
    const double s = parse_number(rest.substr(0, colon), spec);
    const double seed = colon == std::string::npos ? 1 : parse_number(rest.substr(colon + 1), spec);
    DSMOE_CHECK(s >= 0, "--routing '", spec, "': the Zipf exponent must be >= 0");
    for (int l = 0; l < layers; ++l) {
      std::vector<int> perm(n_experts);
      std::iota(perm.begin(), perm.end(), 0);
      Rng rng(hash_key(static_cast<uint64_t>(seed), static_cast<uint64_t>(l)));
      for (int i = n_experts - 1; i > 0; --i) std::swap(perm[i], perm[rng.below(i + 1)]);
      std::vector<double> q(n_experts);
      for (int i = 0; i < n_experts; ++i) q[i] = std::pow(perm[i] + 1.0, -s);
      p.share.push_back(normalized(q, spec));
    }
    return p;
  }
  std::string file = spec;
  int first_row = -1;  // -1: the last half
  if (file.size() > 4 && file.substr(file.size() - 4) == "@all") {
    file.resize(file.size() - 4);
    first_row = 0;
  }
  DSMOE_CHECK(file.size() > 3 && file.substr(file.size() - 3) == ".h5", "--routing '", spec,
              "': expected uniform, zipf:S[:SEED] or a metrics.h5 file (optionally FILE.h5@all)");
  h5::silence_errors();
  h5::Handle fapl = h5::file_access(H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
  h5::Handle f = h5::open_file(file, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl);
  if (!f.valid()) f = h5::open_file(file, H5F_ACC_RDONLY);
  DSMOE_CHECK(f.valid(), file, ": cannot open (missing, not HDF5, or held open by a writer)");
  DSMOE_CHECK(h5::exists(f, "experts/load"), file, ": no dataset /experts/load (a metrics.h5 of a MoE run has it)");
  h5::Handle d = h5::open_dataset(f, "experts/load");
  const std::vector<int64_t> dims = h5::shape(d);
  DSMOE_CHECK(dims.size() == 3, file, ": /experts/load has shape ", h5::shape_str(dims),
              "; expected [rows, moe_layers, n_routed]");
  DSMOE_CHECK(dims[0] >= 1 && dims[1] >= 1 && dims[2] >= 1, file, ": /experts/load is empty (shape ",
              h5::shape_str(dims), ")");
  std::vector<double> load(static_cast<size_t>(dims[0] * dims[1] * dims[2]));
  h5::read_rows(d, H5T_NATIVE_DOUBLE, 0, dims, load.data());
  const int rows = static_cast<int>(dims[0]), src_layers = static_cast<int>(dims[1]), src_n = static_cast<int>(dims[2]);
  const int from_row = first_row < 0 ? rows / 2 : first_row;
  const auto src = mean_shares(load, rows, src_layers, src_n, from_row);
  for (int l = 0; l < layers; ++l) {
    const int from = static_cast<int>((int64_t)l * src_layers / layers);
    std::vector<double> q = src[from];
    if (src_n != n_experts) q = resample_shares(q, n_experts);
    p.share.push_back(normalized(q, file + " /experts/load layer " + std::to_string(from)));
    p.row_share.emplace_back();
    for (int r = from_row; r < rows; ++r) {
      const double* row = load.data() + ((size_t)r * src_layers + from) * src_n;
      std::vector<double> v(row, row + src_n);
      if (src_n != n_experts) v = resample_shares(v, n_experts);
      double sum = 0;
      for (double x : v) sum += x;
      if (sum > 0) p.row_share.back().push_back(normalized(v, spec));
    }
  }
  return p;
}

}  // namespace dsmoe::sim
