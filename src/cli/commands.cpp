#include "cli/commands.h"

namespace dsmoe {

const std::vector<const Command*>& commands() {
  static const std::vector<const Command*> all = {
      &kTrainCommand, &kEvalCommand,    &kGenerateCommand, &kInfoCommand,   &kDataCommand,    &kBenchCommand,
      &kSweepCommand, &kAnalyzeCommand, &kSubmitCommand,   &kStatusCommand, &kSimulateCommand};
  return all;
}

bool one_input(const Args& args) { return args.positional().size() == 1; }
bool one_input_no_set(const Args& args) { return one_input(args) && args.overrides().empty(); }
bool has_checkpoint(const Args& args) { return args.has("checkpoint"); }
bool prepare_named(const Args& args) { return one_input(args) && args.positional()[0] == "prepare"; }

}  // namespace dsmoe
