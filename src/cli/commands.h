// The subcommands of the dsmoe executable, one Command each (in its cmd_<name>.cpp), listed by
// commands(). main() parses a command's arguments by its options and flags, prints its usage on
// --help or when the arguments are not well formed, and runs it; `run` returns the process exit
// code and throws dsmoe::Error for user-facing failures (main prints it and exits 1).
#pragma once
#include <set>
#include <string>
#include <vector>

#include "cli/args.h"

namespace dsmoe {

struct Command {
  const char* name;
  const char* synopsis;  // its arguments, for `dsmoe --help`
  const char* summary;   // what it does, in a few words
  const char* usage;     // `dsmoe <name> --help`
  std::set<std::string> options, flags;
  bool (*well_formed)(const Args& args);
  int (*run)(const Args& args);
  bool takes_rest = false;  // arguments after `--` (Args::rest) are its own
};

// The commands, in `dsmoe --help` order.
const std::vector<const Command*>& commands();

// Well-formed arguments: one input (a config or experiment file, a run folder), with or without
// --set overrides; a --checkpoint; `data prepare`.
bool one_input(const Args& args);
bool one_input_no_set(const Args& args);
bool has_checkpoint(const Args& args);
bool prepare_named(const Args& args);

extern const Command kTrainCommand, kEvalCommand, kGenerateCommand, kInfoCommand, kDataCommand, kBenchCommand,
    kSweepCommand, kAnalyzeCommand, kSubmitCommand, kStatusCommand, kSimulateCommand;

}  // namespace dsmoe
