#include "sweep/run_state.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/checkpoint.h"
#include "util/check.h"

namespace dsmoe {
namespace {

std::string marker_path(const Config& cfg) { return cfg.out + "/finished"; }

}  // namespace

void write_file_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << text;
    f.flush();
    DSMOE_CHECK(f.good(), tmp, ": cannot write");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  DSMOE_CHECK(!ec, path, ": cannot rename ", tmp, " to it: ", ec.message());
}

std::string run_config_path(const Config& cfg) { return cfg.out + "/config.yaml"; }

void write_run_config(const Config& cfg) {
  std::filesystem::create_directories(cfg.out);
  write_file_atomically(run_config_path(cfg), to_yaml(cfg));
}

bool run_finished(const Config& cfg) {
  std::ifstream f(marker_path(cfg), std::ios::binary);
  if (!f) return false;
  std::stringstream text;
  text << f.rdbuf();
  return text.str() == to_yaml(cfg);
}

void mark_finished(const Config& cfg) { write_file_atomically(marker_path(cfg), to_yaml(cfg)); }

int64_t checkpoint_step(const Config& cfg) { return checkpoint_step(cfg.out); }

// Through the checkpoint reader's checks (a damaged file must not hang HDF5 here either); a
// missing or unreadable checkpoint counts as none: the run's own start says what is wrong.
int64_t checkpoint_step(const std::string& out) {
  const std::string path = out + "/checkpoint.h5";
  if (!std::filesystem::exists(path)) return 0;
  try {
    return read_checkpoint_meta(path).step;
  } catch (const Error&) {
    return 0;
  }
}

}  // namespace dsmoe
