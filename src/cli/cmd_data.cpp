#include <cstdio>
#include <filesystem>

#include "cli/args.h"
#include "cli/commands.h"
#include "data/tokens.h"

namespace dsmoe {
namespace {

const char* kUsage =
    "usage: dsmoe data prepare [--out PATH] [--source FILE] [--force]\n"
    "Decompresses the GCIDE dictionary (Debian's dict-gcide) into an llm.c-layout token file\n"
    "(byte-level tokens), by default where `data.path: default` looks for it.\n";

int run(const Args& args) {
  const std::string out = args.get("out", default_corpus_path());
  if (std::filesystem::exists(out) && !args.has("force")) {
    std::printf("%s already exists (use --force to prepare it again)\n", out.c_str());
    return 0;
  }
  const int64_t n = prepare_default_corpus(out, args.get("source"));
  std::printf("prepared %ld tokens in %s\n", (long)n, out.c_str());
  return 0;
}

}  // namespace

const Command kDataCommand = {"data",
                              "prepare [--out PATH] [--force]",
                              "prepare the default corpus (GCIDE)",
                              kUsage,
                              {"out", "source"},
                              {"force"},
                              prepare_named,
                              run,
                              false};

}  // namespace dsmoe
