// Atomicity: the file is written in SWMR mode, where HDF5 orders its metadata writes so that
// a process killed at any point leaves a file that SWMR readers (h5py, or H5Fopen with
// H5F_ACC_SWMR_READ) open with every row up to the last flush(); rows appended after it may
// be partly there. Each group's `step` dataset is extended last, so a reader that sees a step
// sees the rest of its row. While the writer runs, and after it was killed, the superblock
// is marked "open for writing": HDF5 1.10 tools without SWMR support (h5dump, h5ls) refuse
// the file until `h5clear -s` removes the mark (on a copy, while the run goes on). Resuming
// removes it too.
#include "io/metrics.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

#include "io/disk_full.h"
#include "io/h5.h"
#include "util/check.h"
#include "util/log.h"

namespace dsmoe {
namespace {

struct Series {
  std::string path;
  bool integer;              // int64, else float64
  std::vector<int64_t> row;  // shape of one row
  bool per_rank = false;     // row [ranks], widened when a run resumes on more ranks
};

// The train/rank/* datasets: a RankStats field, a column per rank.
const std::pair<const char*, double RankStats::*> kRankSeries[] = {
    {"train/rank/step_time_s", &RankStats::step_time_s},
    {"train/rank/time/compute", &RankStats::t_compute},
    {"train/rank/time/dispatch", &RankStats::t_dispatch},
    {"train/rank/time/combine", &RankStats::t_combine},
    {"train/rank/time/allreduce", &RankStats::t_allreduce},
    {"train/rank/expert_rows", &RankStats::expert_rows},
    {"train/rank/tokens_received", &RankStats::tokens_received},
};

std::vector<Series> schema(const RunInfo& info) {
  std::vector<Series> s;
  for (const char* name : {"step", "tokens", "skipped_steps"}) s.push_back({cat("train/", name), true, {}});
  for (const char* name : {"loss", "aux_loss", "lr", "grad_norm", "tokens_per_s", "step_time_s",
                           "time/compute", "time/dispatch", "time/combine", "time/allreduce",
                           "comm/bytes_sent", "comm/recv_imbalance"})
    s.push_back({cat("train/", name), false, {}});
  for (const auto& series : kRankSeries) s.push_back({series.first, false, {info.world_size}, true});
  s.push_back({"eval/step", true, {}});
  s.push_back({"eval/loss", false, {}});
  // A model without MoE layers has no /experts group: a chunked dataset cannot have a
  // zero-sized fixed dimension.
  if (info.n_moe_layers > 0) {
    const std::vector<int64_t> per_layer{info.n_moe_layers};
    const std::vector<int64_t> per_expert{info.n_moe_layers, info.n_routed};
    s.push_back({"experts/step", true, {}});
    s.push_back({"experts/load", false, per_expert});
    s.push_back({"experts/max_violation", false, per_layer});
    s.push_back({"experts/dropped", false, per_layer});
    if (info.with_bias) s.push_back({"experts/bias", false, per_expert});
  }
  return s;
}

std::string group_of(const std::string& path) { return path.substr(0, path.find('/')); }

// Chunks of at most 64 KiB, so that appending a row rewrites little.
int64_t chunk_rows(const std::vector<int64_t>& row) {
  int64_t elems = 1;
  for (int64_t d : row) elems *= d;
  return std::clamp<int64_t>(8192 / elems, 1, 64);
}

}  // namespace

struct MetricsWriter::Impl {
  std::string path;
  RunInfo info;
  h5::Handle file;
  std::map<std::string, h5::Handle> dsets;  // by series path; closed before the file
  int64_t last_step = 0;                     // of the last train row (for DSMOE_DISK_FULL)
  bool created = false;                      // a new file, still under its temporary name

  void commit() {
    if (!created) return;
    std::error_code ec;
    std::filesystem::rename(path + ".tmp", path, ec);
    DSMOE_CHECK(!ec, "cannot rename ", path, ".tmp to it: ", ec.message());
    created = false;
  }

  // The writer takes no lock: a reader's (dsmoe status, analyze, plot.py) must not stop a run.
  static h5::Handle writer_access() {
    h5::Handle fapl = h5::file_access(H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    h5::without_file_locking(fapl);
    return fapl;
  }

  // A new file under a temporary name, renamed over `path` once whole (commit()), so that a
  // reader of the old file never sees it truncated; an old file that could not be resumed is
  // kept beside it.
  void create() {
    std::error_code ec;
    if (std::filesystem::exists(path)) {
      std::filesystem::rename(path, path + ".replaced", ec);
      DSMOE_CHECK(!ec, "cannot move the file it replaces to ", path, ".replaced: ", ec.message());
      log_info(path, ": the earlier file is kept as ", path, ".replaced");
    }
    file = h5::create_file(path + ".tmp", writer_access());
    created = true;
    for (const Series& s : schema(info)) {
      std::vector<int64_t> dims{0};
      dims.insert(dims.end(), s.row.begin(), s.row.end());
      dsets[s.path] = h5::create_dataset(file, s.path, s.integer ? H5T_STD_I64LE : H5T_IEEE_F64LE,
                                         dims, chunk_rows(s.row), s.per_rank);
    }
  }

  // Opens an existing file and drops the rows of steps after `after`; false (with the
  // file closed) when there is no usable file.
  bool reopen(int64_t after) {
    if (!std::filesystem::exists(path)) return false;
    try {
      h5::Handle fapl = writer_access();
      // Clears the "open for writing" mark a killed SWMR writer leaves, as h5clear does
      // (HDF5 has no public call for it).
      hbool_t clear = true;
      DSMOE_CHECK(H5Pset(fapl, "clear_status_flags", &clear) >= 0, "cannot clear status flags");
      file = h5::open_file(path, H5F_ACC_RDWR, fapl);
      DSMOE_CHECK(file.valid(), "cannot open it");
      std::vector<Series> series = schema(info);
      for (const Series& s : series) {
        DSMOE_CHECK(h5::exists(file, s.path), "no dataset ", s.path);
        h5::Handle d = h5::open_dataset(file, s.path);
        std::vector<int64_t> dims = h5::shape(d);
        const bool fits = !dims.empty() && (s.per_rank ? dims.size() == 2
                                                       : std::vector<int64_t>(dims.begin() + 1, dims.end()) == s.row);
        DSMOE_CHECK(fits, s.path, " has shape ", h5::shape_str(dims), ", this run writes rows of ",
                    h5::shape_str(s.row));
        dsets[s.path] = std::move(d);
      }
      std::map<std::string, int64_t> keep;  // rows kept per group
      for (const Series& s : series) {
        if (s.path != group_of(s.path) + "/step") continue;
        std::vector<int64_t> steps(static_cast<size_t>(h5::shape(dsets[s.path]).at(0)));
        if (!steps.empty())
          h5::read_rows(dsets[s.path], H5T_NATIVE_INT64, 0, {int64_t(steps.size())}, steps.data());
        auto end = std::find_if(steps.begin(), steps.end(), [&](int64_t st) { return st > after; });
        keep[group_of(s.path)] = end - steps.begin();
      }
      for (const Series& s : series) {
        h5::set_rows(dsets[s.path], keep.at(group_of(s.path)));
        if (s.per_rank && h5::shape(dsets[s.path])[1] < s.row[0]) h5::set_columns(dsets[s.path], s.row[0]);
      }
      return true;
    } catch (const Error& e) {
      log_info(path, ": cannot resume (", e.what(), "), starting a new file");
      dsets.clear();
      file.close();
      return false;
    }
  }

  void append(const std::string& series, hid_t mem_type, const void* row) {
    try {
      h5::append_row(dsets.at(series), mem_type, row);
    } catch (const Error& e) {
      throw Error(cat(path, ": ", series, ": ", e.what()));
    }
  }
  void append(const std::string& series, double v) { append(series, H5T_NATIVE_DOUBLE, &v); }
  void append(const std::string& series, int64_t v) { append(series, H5T_NATIVE_INT64, &v); }
  void append(const std::string& series, const std::vector<double>& row, size_t n) {
    DSMOE_CHECK(row.size() == n, path, ": ", series, " row has ", row.size(), " values, expected ",
                n);
    append(series, H5T_NATIVE_DOUBLE, row.data());
  }
  // One value per rank, NaN in the columns past this run's ranks (a run resumed on fewer).
  void append(const std::string& series, const std::vector<RankStats>& ranks, double RankStats::*field) {
    std::vector<double> row(static_cast<size_t>(h5::shape(dsets.at(series)).at(1)), std::nan(""));
    DSMOE_ASSERT(ranks.size() <= row.size());  // reopen() widened it to this run's ranks
    for (size_t r = 0; r < ranks.size(); ++r) row[r] = ranks[r].*field;
    append(series, H5T_NATIVE_DOUBLE, row.data());
  }
};

MetricsWriter::MetricsWriter(const std::string& path, const RunInfo& info,
                             int64_t resume_after_step)
    : impl_(std::make_unique<Impl>()) {
  h5::silence_errors();
  impl_->path = path;
  impl_->info = info;
  try {
    if (resume_after_step < 0 || !impl_->reopen(resume_after_step)) impl_->create();
    hid_t f = impl_->file;
    h5::write_attr(f, "config", info.config_yaml);
    h5::write_attr_int64(f, "params_total", info.params_total);
    h5::write_attr_int64(f, "params_active", info.params_active);
    h5::write_attr_double(f, "flops_per_token", info.flops_per_token);
    h5::write_attr_int(f, "world_size", info.world_size);
    h5::write_attr(f, "backend", info.backend);
    // This attempt's provenance; `attempts` keeps a line for every attempt the file has seen.
    h5::write_attr(f, "dsmoe_version", info.source_version);
    h5::write_attr(f, "device", info.device);
    h5::write_attr(f, "host", info.host);
    h5::write_attr(f, "command", info.command);
    const std::string earlier = h5::has_attr(f, "attempts") ? h5::read_attr_string(f, "attempts") : "";
    h5::write_attr(f, "attempts", cat(earlier, info.started, " from step ", info.from_step, ": dsmoe ",
                                      info.source_version, ", ", info.world_size, " rank(s), ", info.backend, " on ",
                                      info.device, ", host ", info.host, ": ", info.command, "\n"));
    DSMOE_CHECK(H5Fflush(f, H5F_SCOPE_GLOBAL) >= 0, "cannot write it out");
    impl_->commit();
    DSMOE_CHECK(H5Fstart_swmr_write(f) >= 0, "cannot start SWMR writing");
  } catch (const Error& e) {
    throw Error(cat(path, ": ", e.what()));
  }
}

MetricsWriter::~MetricsWriter() = default;

void MetricsWriter::append_train(const TrainRow& row) {
  Impl& m = *impl_;
  DSMOE_CHECK(row.ranks.size() == static_cast<size_t>(m.info.world_size), m.path, ": a train row has ",
              row.ranks.size(), " ranks' values, expected world_size ", m.info.world_size);
  m.append("train/loss", row.loss);
  m.append("train/aux_loss", row.aux_loss);
  m.append("train/lr", row.lr);
  m.append("train/grad_norm", row.grad_norm);
  m.append("train/tokens", row.tokens);
  m.append("train/tokens_per_s", row.tokens_per_s);
  m.append("train/step_time_s", row.step_time_s);
  m.append("train/time/compute", row.t_compute);
  m.append("train/time/dispatch", row.t_dispatch);
  m.append("train/time/combine", row.t_combine);
  m.append("train/time/allreduce", row.t_allreduce);
  m.append("train/comm/bytes_sent", row.bytes_sent);
  m.append("train/comm/recv_imbalance", row.recv_imbalance);
  m.append("train/skipped_steps", row.skipped_steps);
  for (const auto& [series, field] : kRankSeries) m.append(series, row.ranks, field);
  m.append("train/step", row.step);
  m.last_step = row.step;
}

void MetricsWriter::append_eval(int64_t step, double loss) {
  impl_->append("eval/loss", loss);
  impl_->append("eval/step", step);
}

void MetricsWriter::append_experts(const ExpertRow& row) {
  Impl& m = *impl_;
  if (m.info.n_moe_layers == 0) return;
  const size_t layers = static_cast<size_t>(m.info.n_moe_layers);
  const size_t experts = layers * static_cast<size_t>(m.info.n_routed);
  m.append("experts/load", row.load, experts);
  m.append("experts/max_violation", row.max_violation, layers);
  m.append("experts/dropped", row.dropped, layers);
  if (m.info.with_bias) m.append("experts/bias", row.bias, experts);
  m.append("experts/step", row.step);
}

void MetricsWriter::flush() {
  Impl& m = *impl_;
  if (h5::disk_full_requested(m.path, m.last_step)) h5::fill_disk(m.file, m.path);  // test hook
  DSMOE_CHECK(H5Fflush(m.file, H5F_SCOPE_LOCAL) >= 0, m.path, ": cannot write metrics (flush failed",
              h5::why(), ")");
}

}  // namespace dsmoe
