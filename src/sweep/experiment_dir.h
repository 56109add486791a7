// The folder of an experiment's runs as a user passes it (runs/<experiment>; a trailing slash
// from tab completion changes nothing). A run folder or the runs root passed by mistake is an
// error that says what to pass instead.
#pragma once
#include <string>
#include <vector>

namespace dsmoe {

// `arg` without trailing slashes, after checking that it is an experiment's folder; `command`
// ("status", "analyze") names the command in the suggestion.
std::string experiment_dir(const std::string& arg, const std::string& command);

// A sub-folder of an experiment folder that holds a run (its config.yaml or metrics.h5).
bool is_run_folder(const std::string& path);

// The names of the run folders of `dir`, sorted.
std::vector<std::string> run_folders(const std::string& dir);

}  // namespace dsmoe
