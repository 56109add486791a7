// Fuzz target: the run config parser (src/config). Any text either parses, and then dumps to
// YAML that reads back to the same config and validates for 1..8 ranks or fails naming the
// key, or fails with an error naming the file.
#include "config/config.h"
#include "fuzz_targets.h"

namespace dsmoe::fuzz {

void config_one(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::string source = "fuzz_config.yaml";
  Config cfg;
  if (!loads(source, [&] { cfg = parse_config(text, source); })) return;
  Config back;
  try {
    back = parse_config(to_yaml(cfg), "<dump>");
  } catch (const Error& e) {
    finding("the dump of a parsed config does not parse: ", e.what(), "\n", to_yaml(cfg));
  }
  if (back != cfg) finding("the dump reads back to another config:\n", to_yaml(cfg), "---\n", to_yaml(back));
  for (int world = 1; world <= 8; ++world) loads(source, [&] { validate_config(cfg, world); });
}

}  // namespace dsmoe::fuzz

#ifdef DSMOE_LIBFUZZER
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dsmoe::fuzz::config_one(data, size);
  return 0;
}
#endif
