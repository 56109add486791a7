#include <gtest/gtest.h>
#include <hdf5.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "io/metrics.h"
#include "test_util.h"
#include "util/check.h"

namespace dsmoe {
namespace {

using test::TempDir;

RunInfo moe_info(bool with_bias = true) {
  RunInfo info;
  info.config_yaml = "model:\n  d_model: 8\n";
  info.params_total = 5000000000;
  info.params_active = 1000;
  info.flops_per_token = 6.5e3;
  info.world_size = 2;
  info.backend = "cpu";
  info.n_moe_layers = 2;
  info.n_routed = 3;
  info.with_bias = with_bias;
  return info;
}

// Rank r's values of step `step`: each field its own, so that a swapped column shows.
RankStats rank_stats(int64_t step, int r) {
  RankStats s;
  s.step_time_s = 0.25 + 0.01 * r;
  s.t_compute = 0.1 + 0.01 * r;
  s.t_dispatch = 0.02 * r;
  s.t_combine = 0.03 * r;
  s.t_allreduce = 0.04 * step;
  s.expert_rows = 100.0 * step + r;
  s.tokens_received = 10.0 * step + r;
  return s;
}

TrainRow train_row(int64_t step, int ranks = 2) {
  TrainRow r;
  r.step = step;
  r.loss = 10.0 - step;
  r.aux_loss = 0.01 * step;
  r.lr = 1e-3;
  r.grad_norm = 0.5 * step;
  r.tokens = 256 * step;
  r.tokens_per_s = 1000.0 + step;
  r.step_time_s = 0.25;
  r.t_compute = 0.1;
  r.t_dispatch = 0.02;
  r.t_combine = 0.03;
  r.t_allreduce = 0.04 * step;
  for (int k = 0; k < ranks; ++k) r.ranks.push_back(rank_stats(step, k));
  return r;
}

ExpertRow expert_row(const RunInfo& info, int64_t step) {
  ExpertRow r;
  r.step = step;
  for (int i = 0; i < info.n_moe_layers * info.n_routed; ++i) {
    r.load.push_back(100.0 * step + i);
    if (info.with_bias) r.bias.push_back(-0.5 * i);
  }
  for (int l = 0; l < info.n_moe_layers; ++l) {
    r.max_violation.push_back(0.1 * l + step);
    r.dropped.push_back(l);
  }
  return r;
}

// Reads metrics.h5 with the plain HDF5 C API. SWMR opens need the latest file format.
class Reader {
 public:
  explicit Reader(const std::string& path, bool swmr = false) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    file_ = H5Fopen(path.c_str(), swmr ? H5F_ACC_RDONLY | H5F_ACC_SWMR_READ : H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
  }
  ~Reader() {
    if (file_ >= 0) H5Fclose(file_);
  }
  bool ok() const { return file_ >= 0; }

  bool has(const std::string& path) const {
    for (size_t end = path.find('/');; end = path.find('/', end + 1)) {
      if (H5Lexists(file_, path.substr(0, end).c_str(), H5P_DEFAULT) <= 0) return false;
      if (end == std::string::npos) return true;
    }
  }
  std::vector<hsize_t> shape(const std::string& path) const {
    hid_t d = H5Dopen2(file_, path.c_str(), H5P_DEFAULT);
    hid_t s = H5Dget_space(d);
    std::vector<hsize_t> dims(static_cast<size_t>(H5Sget_simple_extent_ndims(s)));
    H5Sget_simple_extent_dims(s, dims.data(), nullptr);
    H5Sclose(s);
    H5Dclose(d);
    return dims;
  }
  template <typename T>
  std::vector<T> read(const std::string& path) const {
    size_t n = 1;
    for (hsize_t d : shape(path)) n *= d;
    std::vector<T> v(n);
    hid_t d = H5Dopen2(file_, path.c_str(), H5P_DEFAULT);
    hid_t t = std::is_same_v<T, double> ? H5T_NATIVE_DOUBLE : H5T_NATIVE_INT64;
    EXPECT_GE(H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), 0) << path;
    H5Dclose(d);
    return v;
  }
  bool is_int64(const std::string& path) const {
    hid_t d = H5Dopen2(file_, path.c_str(), H5P_DEFAULT), t = H5Dget_type(d);
    bool yes = H5Tget_class(t) == H5T_INTEGER && H5Tget_size(t) == 8;
    H5Tclose(t);
    H5Dclose(d);
    return yes;
  }
  template <typename T>
  T attr(const char* name) const {
    T v{};
    hid_t a = H5Aopen(file_, name, H5P_DEFAULT);
    if constexpr (std::is_same_v<T, std::string>) {
      hid_t t = H5Aget_type(a);
      EXPECT_GT(H5Tis_variable_str(t), 0) << name;
      char* p = nullptr;
      EXPECT_GE(H5Aread(a, t, &p), 0) << name;
      v = p ? p : "";
      H5free_memory(p);
      H5Tclose(t);
    } else {
      EXPECT_GE(H5Aread(a, std::is_same_v<T, double> ? H5T_NATIVE_DOUBLE : H5T_NATIVE_INT64, &v),
                0)
          << name;
    }
    H5Aclose(a);
    return v;
  }

 private:
  hid_t file_ = -1;
};

using I64 = std::vector<int64_t>;
using F64 = std::vector<double>;

// The train/rank/* datasets and the RankStats field each holds.
const std::pair<const char*, double RankStats::*> kRankSeries[] = {
    {"train/rank/step_time_s", &RankStats::step_time_s},   {"train/rank/time/compute", &RankStats::t_compute},
    {"train/rank/time/dispatch", &RankStats::t_dispatch},  {"train/rank/time/combine", &RankStats::t_combine},
    {"train/rank/time/allreduce", &RankStats::t_allreduce}, {"train/rank/expert_rows", &RankStats::expert_rows},
    {"train/rank/tokens_received", &RankStats::tokens_received}};

// Equal, NaN matching NaN.
void expect_same(const F64& got, const F64& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_TRUE(got[i] == want[i] || (std::isnan(got[i]) && std::isnan(want[i])))
        << what << "[" << i << "] = " << got[i] << ", expected " << want[i];
}

struct Written {
  I64 steps;  // train rows appended, of rank_stats()
  int ranks;  // by a run of this many ranks
};

// Every train/rank/* dataset holds the rows `written`, in `columns` columns (NaN past a row's ranks).
void expect_rank_rows(const Reader& r, const std::vector<Written>& written, int columns) {
  for (const auto& [series, field] : kRankSeries) {
    F64 want;
    for (const Written& w : written)
      for (int64_t step : w.steps)
        for (int k = 0; k < columns; ++k) want.push_back(k < w.ranks ? rank_stats(step, k).*field : std::nan(""));
    const hsize_t rows = want.size() / columns;
    EXPECT_EQ(r.shape(series), (std::vector<hsize_t>{rows, hsize_t(columns)})) << series;
    expect_same(r.read<double>(series), want, series);
  }
}

// A new file with train rows of steps 1..n on info.world_size ranks.
void write_train_rows(const std::string& path, const RunInfo& info, int n) {
  MetricsWriter w(path, info);
  for (int s = 1; s <= n; ++s) w.append_train(train_row(s, info.world_size));
}

bool on_path(const char* tool) {
  return std::system((std::string("command -v ") + tool + " >/dev/null 2>&1").c_str()) == 0;
}

// Runs f in a forked child that leaves with _exit(f()): no destructors, no gtest.
template <typename F>
pid_t fork_child(F f) {
  pid_t pid = fork();
  if (pid == 0) {
    int code = 3;
    try {
      code = f();
    } catch (...) {
    }
    _exit(code);
  }
  return pid;
}

int wait_exit_code(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(Metrics, AppendedRowsReadBack) {
  TempDir dir;
  const std::string path = dir.file("metrics.h5");
  RunInfo info = moe_info();
  {
    MetricsWriter w(path, info);
    for (int s = 1; s <= 5; ++s) w.append_train(train_row(s));
    w.append_eval(2, 3.5);
    w.append_eval(4, 3.25);
    for (int s = 1; s <= 3; ++s) w.append_experts(expert_row(info, s));
  }
  Reader r(path);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.attr<std::string>("config"), info.config_yaml);
  EXPECT_EQ(r.attr<std::string>("backend"), "cpu");
  EXPECT_EQ(r.attr<int64_t>("params_total"), 5000000000);
  EXPECT_EQ(r.attr<int64_t>("params_active"), 1000);
  EXPECT_EQ(r.attr<int64_t>("world_size"), 2);
  EXPECT_EQ(r.attr<double>("flops_per_token"), 6.5e3);

  EXPECT_EQ(r.read<int64_t>("train/step"), (I64{1, 2, 3, 4, 5}));
  EXPECT_EQ(r.read<int64_t>("train/tokens"), (I64{256, 512, 768, 1024, 1280}));
  EXPECT_EQ(r.read<double>("train/loss"), (F64{9, 8, 7, 6, 5}));
  EXPECT_EQ(r.read<double>("train/grad_norm"), (F64{0.5, 1, 1.5, 2, 2.5}));
  EXPECT_EQ(r.read<double>("train/time/allreduce").at(4), 0.04 * 5);
  for (const char* name : {"aux_loss", "lr", "tokens_per_s", "step_time_s", "time/compute",
                           "time/dispatch", "time/combine"}) {
    EXPECT_EQ(r.shape(std::string("train/") + name), std::vector<hsize_t>{5}) << name;
    EXPECT_FALSE(r.is_int64(std::string("train/") + name)) << name;
  }
  EXPECT_TRUE(r.is_int64("train/step"));
  EXPECT_TRUE(r.is_int64("eval/step"));
  EXPECT_TRUE(r.is_int64("experts/step"));
  EXPECT_EQ(r.read<int64_t>("eval/step"), (I64{2, 4}));
  EXPECT_EQ(r.read<double>("eval/loss"), (F64{3.5, 3.25}));

  EXPECT_EQ(r.read<int64_t>("experts/step"), (I64{1, 2, 3}));
  EXPECT_EQ(r.shape("experts/load"), (std::vector<hsize_t>{3, 2, 3}));
  EXPECT_EQ(r.shape("experts/bias"), (std::vector<hsize_t>{3, 2, 3}));
  EXPECT_EQ(r.shape("experts/max_violation"), (std::vector<hsize_t>{3, 2}));
  EXPECT_EQ(r.shape("experts/dropped"), (std::vector<hsize_t>{3, 2}));
  F64 load = r.read<double>("experts/load");
  EXPECT_EQ(load.at(6 + 4), 200.0 + 4);  // step 2, layer 1, expert 1
  EXPECT_EQ(r.read<double>("experts/bias").at(17), -2.5);
  EXPECT_EQ(r.read<double>("experts/max_violation"), (F64{1, 1.1, 2, 2.1, 3, 3.1}));
  expect_rank_rows(r, {{{1, 2, 3, 4, 5}, 2}}, 2);
}

TEST(Metrics, TrainRowNeedsAValueOfEveryRank) {
  TempDir dir;
  const std::string path = dir.file("metrics.h5");
  {
    MetricsWriter w(path, moe_info());
    const std::string error = test::error_of([&] { w.append_train(train_row(1, 3)); });
    EXPECT_NE(error.find(path), std::string::npos) << error;
    EXPECT_NE(error.find("3 ranks' values, expected world_size 2"), std::string::npos) << error;
  }
  Reader r(path);
  EXPECT_EQ(r.shape("train/loss"), std::vector<hsize_t>{0});  // nothing of the row was written
}

TEST(Metrics, ExpertsDatasetsFollowTheModel) {
  TempDir dir;
  RunInfo info = moe_info(false);
  { MetricsWriter w(dir.file("nobias.h5"), info); }
  Reader nobias(dir.file("nobias.h5"));
  EXPECT_TRUE(nobias.has("experts/load"));
  EXPECT_FALSE(nobias.has("experts/bias"));

  info.n_moe_layers = 0;
  {
    MetricsWriter w(dir.file("dense.h5"), info);
    w.append_experts(ExpertRow{});
    w.append_train(train_row(1));
  }
  Reader dense(dir.file("dense.h5"));
  EXPECT_FALSE(dense.has("experts"));
  EXPECT_EQ(dense.read<int64_t>("train/step"), (I64{1}));
}

TEST(Metrics, ResumeDropsLaterRows) {
  TempDir dir;
  const std::string path = dir.file("metrics.h5");
  RunInfo info = moe_info();
  {
    MetricsWriter w(path, info);
    for (int s = 1; s <= 6; ++s) {
      w.append_train(train_row(s));
      w.append_experts(expert_row(info, s));
      if (s % 2 == 0) w.append_eval(s, 1.0 / s);
    }
  }
  info.world_size = 4;
  {
    MetricsWriter w(path, info, 3);
    w.append_train(train_row(4, 4));
  }
  Reader r(path);
  EXPECT_EQ(r.read<int64_t>("train/step"), (I64{1, 2, 3, 4}));
  EXPECT_EQ(r.read<double>("train/loss"), (F64{9, 8, 7, 6}));
  EXPECT_EQ(r.shape("train/time/compute"), std::vector<hsize_t>{4});
  EXPECT_EQ(r.read<int64_t>("eval/step"), (I64{2}));
  EXPECT_EQ(r.read<double>("eval/loss"), (F64{0.5}));
  EXPECT_EQ(r.read<int64_t>("experts/step"), (I64{1, 2, 3}));
  EXPECT_EQ(r.shape("experts/load"), (std::vector<hsize_t>{3, 2, 3}));
  EXPECT_EQ(r.shape("experts/dropped"), (std::vector<hsize_t>{3, 2}));
  EXPECT_EQ(r.attr<int64_t>("world_size"), 4);
  expect_rank_rows(r, {{{1, 2, 3}, 2}, {{4}, 4}}, 4);  // the rows of 2 ranks read NaN in the new columns
}

TEST(Metrics, ResumeOnFewerRanksPadsTheirRows) {
  TempDir dir;
  const std::string path = dir.file("metrics.h5");
  RunInfo info = moe_info();
  info.world_size = 4;
  write_train_rows(path, info, 3);
  info.world_size = 2;
  { MetricsWriter(path, info, 2).append_train(train_row(3, 2)); }
  Reader r(path);
  EXPECT_EQ(r.read<int64_t>("train/step"), (I64{1, 2, 3}));
  expect_rank_rows(r, {{{1, 2}, 4}, {{3}, 2}}, 4);
}

// A file without the train/rank/* datasets (as written before they existed) does not fit: it is
// replaced by a new file, not extended in place, and kept beside it as metrics.h5.replaced.
TEST(Metrics, ResumeOfAFileWithoutRankDatasetsStartsOver) {
  TempDir dir;
  const std::string path = dir.file("metrics.h5");
  RunInfo info = moe_info();
  write_train_rows(path, info, 3);
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  ASSERT_GE(H5Ldelete(f, "train/rank", H5P_DEFAULT), 0);
  H5Fclose(f);
  { MetricsWriter(path, info, 2).append_train(train_row(3)); }
  Reader r(path);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.read<int64_t>("train/step"), (I64{3}));
  EXPECT_EQ(r.read<double>("train/loss"), (F64{7}));
  expect_rank_rows(r, {{{3}, 2}}, 2);
  EXPECT_EQ(Reader(path + ".replaced").read<int64_t>("train/step"), (I64{1, 2, 3}));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(Metrics, ResumeWithoutUsableFileStartsOver) {
  TempDir dir;
  RunInfo info = moe_info();
  test::write_file(dir.file("garbage.h5"), std::string(1000, 'g'));
  for (const char* name : {"missing.h5", "garbage.h5"}) {
    { MetricsWriter(dir.file(name), info, 5).append_train(train_row(6)); }
    Reader r(dir.file(name));
    ASSERT_TRUE(r.ok()) << name;
    EXPECT_EQ(r.read<int64_t>("train/step"), (I64{6})) << name;
  }
  EXPECT_EQ(test::read_file(dir.file("garbage.h5.replaced")), std::string(1000, 'g'));  // kept, not lost
  // Another model shape: the old rows do not fit and are dropped.
  info.n_routed = 5;
  { MetricsWriter(dir.file("missing.h5"), info, 6).append_train(train_row(7)); }
  Reader r(dir.file("missing.h5"));
  EXPECT_EQ(r.read<int64_t>("train/step"), (I64{7}));
  EXPECT_EQ(r.shape("experts/load"), (std::vector<hsize_t>{0, 2, 5}));
}

// `dsmoe status`, `dsmoe analyze` or plot.py may hold the file open (as SWMR readers, in another
// process) at the moment a run resumes: the run goes on with its rows kept, and the reader reads.
TEST(Metrics, AReaderHoldingTheFileNeverStopsAResume) {
  TempDir dir;
  const std::string path = dir.file("metrics.h5");
  RunInfo info = moe_info();
  write_train_rows(path, info, 4);
  int opened[2], resumed[2];
  ASSERT_EQ(pipe(opened), 0);
  ASSERT_EQ(pipe(resumed), 0);
  pid_t reader = fork_child([&] {
    Reader r(path, /*swmr=*/true);
    char c = 'o';
    if (!r.ok() || write(opened[1], &c, 1) != 1 || read(resumed[0], &c, 1) != 1) return 2;
    return r.read<int64_t>("train/step").front() == 1 ? 0 : 3;
  });
  char c = 0;
  ASSERT_EQ(read(opened[0], &c, 1), 1);
  {
    MetricsWriter w(path, info, 3);
    w.append_train(train_row(4));
    w.flush();
    ASSERT_EQ(write(resumed[1], &c, 1), 1);
    EXPECT_EQ(wait_exit_code(reader), 0);
  }
  EXPECT_EQ(Reader(path).read<int64_t>("train/step"), (I64{1, 2, 3, 4}));
  EXPECT_FALSE(std::filesystem::exists(path + ".replaced"));
  for (int fd : {opened[0], opened[1], resumed[0], resumed[1]}) close(fd);
}

TEST(Metrics, SwmrReaderSeesFlushedRowsWhileWriting) {
  TempDir dir;
  const std::string path = dir.file("metrics.h5");
  int flushed[2], done[2];
  ASSERT_EQ(pipe(flushed), 0);
  ASSERT_EQ(pipe(done), 0);
  pid_t pid = fork_child([&] {
    MetricsWriter w(path, moe_info());
    for (int s = 1; s <= 3; ++s) w.append_train(train_row(s));
    w.flush();
    char c = 'f';
    if (write(flushed[1], &c, 1) != 1 || read(done[0], &c, 1) != 1) return 2;
    w.append_train(train_row(4));
    return 0;
  });
  char c = 0;
  ASSERT_EQ(read(flushed[0], &c, 1), 1);
  {
    Reader r(path, /*swmr=*/true);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.read<int64_t>("train/step"), (I64{1, 2, 3}));
    EXPECT_EQ(r.read<double>("train/loss"), (F64{9, 8, 7}));
  }
  // HDF5 1.10's h5dump cannot open a file held by a SWMR writer ("file is already open for
  // write"); a copy with the mark cleared by h5clear reads fine.
  if (on_path("h5dump") && on_path("h5clear")) {
    std::string copy = dir.file("copy.h5");
    std::string cmd = "cp '" + path + "' '" + copy + "' && h5clear -s '" + copy +
                      "' && h5dump -H '" + copy + "' | grep -q 'DATASET \"step\"'";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  ASSERT_EQ(write(done[1], &c, 1), 1);
  EXPECT_EQ(wait_exit_code(pid), 0);
  Reader r(path);
  EXPECT_EQ(r.read<int64_t>("train/step"), (I64{1, 2, 3, 4}));
  for (int fd : {flushed[0], flushed[1], done[0], done[1]}) close(fd);
}

TEST(Metrics, KilledWriterLeavesFlushedRows) {
  TempDir dir;
  const std::string path = dir.file("metrics.h5");
  RunInfo info = moe_info();
  pid_t pid = fork_child([&] {
    MetricsWriter* w = new MetricsWriter(path, info);  // never destroyed: the process dies
    for (int s = 1; s <= 3; ++s) {
      w->append_train(train_row(s));
      w->append_experts(expert_row(info, s));
    }
    w->flush();
    w->append_train(train_row(4));
    return 1;
  });
  ASSERT_EQ(wait_exit_code(pid), 1);
  {
    Reader r(path, /*swmr=*/true);
    ASSERT_TRUE(r.ok());
    I64 steps = r.read<int64_t>("train/step");
    ASSERT_GE(steps.size(), 3u);
    EXPECT_EQ(I64(steps.begin(), steps.begin() + 3), (I64{1, 2, 3}));
    F64 loss = r.read<double>("train/loss");
    ASSERT_GE(loss.size(), 3u);
    EXPECT_EQ(F64(loss.begin(), loss.begin() + 3), (F64{9, 8, 7}));
    EXPECT_EQ(r.read<int64_t>("experts/step"), (I64{1, 2, 3}));
  }
  // Resuming the crashed file keeps its rows and leaves a file every tool opens.
  { MetricsWriter(path, info, 2).append_train(train_row(3)); }
  Reader r(path);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.read<int64_t>("train/step"), (I64{1, 2, 3}));
  EXPECT_EQ(r.read<int64_t>("experts/step"), (I64{1, 2}));
  if (on_path("h5dump")) {
    std::string cmd = "h5dump -H '" + path + "' >/dev/null";
    EXPECT_EQ(std::system(cmd.c_str()), 0);
  }
}

}  // namespace
}  // namespace dsmoe
