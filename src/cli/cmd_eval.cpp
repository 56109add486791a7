#include <cstdio>
#include <memory>

#include "cli/args.h"
#include "cli/commands.h"
#include "train/engine.h"
#include "util/log.h"

namespace dsmoe {
namespace {

const char* kUsage =
    "usage: dsmoe eval --checkpoint CK [--data PATH] [--batches N] [--backend auto|cpu|cuda]\n"
    "Mean validation cross-entropy (nats/token) of a checkpoint, on the validation split of\n"
    "its own data or of PATH, over N batches (default: the run's train.eval_batches).\n";

int run(const Args& args) {
  const std::string ck = args.get("checkpoint");
  Config cfg = config_from_checkpoint(ck);
  if (args.has("data")) cfg.data.path = args.get("data");
  cfg.backend = args.get("backend", "auto");  // checkpoints move between backends
  cfg.train.eval_batches = static_cast<int>(args.get_int("batches", cfg.train.eval_batches));
  DSMOE_CHECK(cfg.train.eval_batches > 0, "--batches must be positive");
  auto comm = make_world_comm();
  std::unique_ptr<Engine> made;
  try {
    made = std::make_unique<Engine>(cfg, *comm);
  } catch (const Error& e) {
    if (args.has("data")) throw;
    throw Error(cat(e.what(), " (the data of the checkpoint's run; --data PATH names another copy or corpus)"));
  }
  Engine& engine = *made;
  DSMOE_CHECK(cfg.train.eval_batches <= engine.eval_batches_that_fit(), "--batches ", cfg.train.eval_batches,
              ": the validation split of ", cfg.data.path, " holds ", engine.eval_batches_that_fit(), " batches of ",
              cfg.train.batch_size, " sequences; pass --batches ", engine.eval_batches_that_fit(),
              " or fewer, or a larger corpus with --data");
  engine.load_checkpoint(ck);
  const double loss = engine.evaluate();
  char line[160];
  std::snprintf(line, sizeof line, "val loss %.4f (%d batches of %d sequences, step %ld)", loss,
                cfg.train.eval_batches, cfg.train.batch_size, (long)engine.step());
  log_info(line);
  return 0;
}

}  // namespace

const Command kEvalCommand = {"eval",
                              "--checkpoint CK [--data PATH]",
                              "validation loss of a checkpoint",
                              kUsage,
                              {"checkpoint", "data", "batches", "backend"},
                              {},
                              has_checkpoint,
                              run,
                              false};

}  // namespace dsmoe
