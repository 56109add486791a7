// Where a run of a sweep stands, from its folder: finished (a marker written atomically once
// its checkpoint reached train.steps), or how far its checkpoint got.
#pragma once
#include <cstdint>
#include <string>

#include "config/config.h"

namespace dsmoe {

// The run's config file, which `dsmoe train` is given (written atomically).
std::string run_config_path(const Config& cfg);
void write_run_config(const Config& cfg);

// Finished: the marker exists and holds this very config (a changed config runs again, resuming
// from the checkpoint where its shapes allow).
bool run_finished(const Config& cfg);
void mark_finished(const Config& cfg);

// The step of OUT/checkpoint.h5; 0 when there is none or it cannot be read.
int64_t checkpoint_step(const Config& cfg);
int64_t checkpoint_step(const std::string& out);

// Writes `text` to a temporary name beside `path` and renames it over `path`.
void write_file_atomically(const std::string& path, const std::string& text);

}  // namespace dsmoe
