// Replays every seed (tests/fuzz/corpus/<target>/) and every input a fuzzer once failed on
// (tests/fuzz/regressions/<target>/) through the fuzz targets' entry functions, in the ordinary
// build, so the regressions stay fixed without clang or libFuzzer.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "fuzz_targets.h"

namespace dsmoe::fuzz {
namespace {

namespace fs = std::filesystem;
using Entry = void (*)(const uint8_t*, size_t);

// The inputs of one folder, sorted (README.md and dotfiles are notes, not inputs).
std::vector<fs::path> inputs(const std::string& kind, const std::string& target) {
  std::vector<fs::path> files;
  const fs::path dir = fs::path(DSMOE_FUZZ_DIR) / kind / target;
  if (!fs::is_directory(dir)) return files;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (e.is_regular_file() && name[0] != '.' && name != "README.md") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

void replay(const std::string& target, Entry entry) {
  const std::vector<fs::path> corpus = inputs("corpus", target);
  EXPECT_GE(corpus.size(), 3u) << "tests/fuzz/corpus/" << target << " holds too few seeds";
  std::vector<fs::path> all = corpus;
  for (const fs::path& p : inputs("regressions", target)) all.push_back(p);
  for (const fs::path& p : all) {
    std::ifstream f(p, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    try {
      entry(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    } catch (const std::exception& e) {
      ADD_FAILURE() << p.string() << ": " << e.what();
    }
  }
}

TEST(FuzzReplay, Config) { replay("config", config_one); }
TEST(FuzzReplay, Experiment) { replay("experiment", experiment_one); }
TEST(FuzzReplay, Tokens) { replay("tokens", tokens_one); }
TEST(FuzzReplay, Checkpoint) { replay("checkpoint", checkpoint_one); }

}  // namespace
}  // namespace dsmoe::fuzz
