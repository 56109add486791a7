#include "sweep/experiment_dir.h"

#include <algorithm>
#include <filesystem>

#include "sweep/manifest.h"
#include "util/check.h"
#include "util/format.h"

namespace dsmoe {
namespace {

namespace fs = std::filesystem;

bool is_experiment_folder(const fs::path& dir) {
  return fs::exists(manifest_path(dir.string())) || !run_folders(dir.string()).empty();
}

}  // namespace

bool is_run_folder(const std::string& path) {
  return fs::exists(fs::path(path) / "config.yaml") || fs::exists(fs::path(path) / "metrics.h5");
}

std::vector<std::string> run_folders(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec))
    if (e.is_directory() && is_run_folder(e.path().string())) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string experiment_dir(const std::string& arg, const std::string& command) {
  std::string dir = fs::path(arg).lexically_normal().string();
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  DSMOE_CHECK(fs::is_directory(dir), arg, ": no such folder (give runs/<experiment>, the folder of a sweep's runs)");
  if (is_run_folder(dir)) {
    const std::string parent = fs::path(dir).parent_path().string();
    throw Error(cat(arg, " is the folder of one run; pass its experiment's folder: dsmoe ", command, " ",
                    parent.empty() ? "." : parent));
  }
  if (is_experiment_folder(dir)) return dir;
  std::vector<std::string> experiments;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec))
    if (e.is_directory() && is_experiment_folder(e.path())) experiments.push_back(e.path().filename().string());
  std::sort(experiments.begin(), experiments.end());
  DSMOE_CHECK(experiments.empty(), arg, " holds the folders of ", experiments.size(), " experiment(s) (",
              join(experiments, ", "), "); pass one: dsmoe ", command, " ", dir, "/", experiments.front());
  throw Error(cat(arg, ": no runs here (no sweep.yaml and no run folders); give runs/<experiment>"));
}

}  // namespace dsmoe
