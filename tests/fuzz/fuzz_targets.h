// The fuzz targets' entry functions (one per tests/fuzz/<target>.cpp). Each takes one input and
// returns normally when the input loads or is refused with a dsmoe::Error whose message names
// the file it came from; anything else (a crash, undefined behaviour, another exception, an
// error that does not name the file, a loaded value that breaks an invariant) is a finding:
// abort() under libFuzzer (-DDSMOE_LIBFUZZER), a std::logic_error in fuzz_replay_test.
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include "util/check.h"

namespace dsmoe::fuzz {

void config_one(const uint8_t* data, size_t size);      // config.cpp: parse_config
void experiment_one(const uint8_t* data, size_t size);  // experiment.cpp: parse_experiment
void tokens_one(const uint8_t* data, size_t size);      // tokens.cpp: load_tokens of a .bin
void checkpoint_one(const uint8_t* data, size_t size);  // checkpoint.cpp: read_checkpoint

template <typename... Args>
[[noreturn]] void finding(const Args&... args) {
  const std::string what = cat("fuzz finding: ", args...);
#ifdef DSMOE_LIBFUZZER
  std::fprintf(stderr, "%s\n", what.c_str());
  std::abort();
#else
  throw std::logic_error(what);
#endif
}

// Runs f(); true when it returned, false when it threw a dsmoe::Error naming `name`.
template <typename F>
bool loads(const std::string& name, F&& f) {
  try {
    f();
    return true;
  } catch (const Error& e) {
    if (std::strstr(e.what(), name.c_str()) == nullptr)
      finding("the error does not name ", name, ": ", e.what());
    return false;
  }
}

// A file of its own for the bytes (the readers take paths), removed when it goes.
struct TempInput {
  TempInput(const uint8_t* data, size_t size, const std::string& suffix) {
    path = (std::filesystem::temp_directory_path() / cat("dsmoe-fuzz-", getpid(), suffix)).string();
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    f.close();
    if (!f) finding("cannot write the input to ", path);
  }
  ~TempInput() { std::remove(path.c_str()); }
  TempInput(const TempInput&) = delete;
  TempInput& operator=(const TempInput&) = delete;
  std::string path;
};

}  // namespace dsmoe::fuzz
