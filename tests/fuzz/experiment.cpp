// Fuzz target: the experiment-file parser (src/sweep/experiment*). Any text either parses, and
// then every variant's settings apply over the base or fail naming the file, or fails with an
// error naming the file. The file lives in a folder that does not exist, so a relative `base:`
// names a missing file.
#include "fuzz_targets.h"
#include "sweep/experiment.h"

namespace dsmoe::fuzz {

void experiment_one(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::string source = "/nonexistent-dsmoe-fuzz/fuzz_experiment.yaml";
  Experiment exp;
  if (!loads(source, [&] { exp = parse_experiment(text, source); })) return;
  if (exp.variants.empty()) finding("an experiment without variants parsed");
  for (const Variant& v : exp.variants) {
    std::vector<Setting> settings = exp.base_settings;
    settings.insert(settings.end(), v.settings.begin(), v.settings.end());
    loads(source, [&] { apply_settings(exp.base, settings); });
  }
}

}  // namespace dsmoe::fuzz

#ifdef DSMOE_LIBFUZZER
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dsmoe::fuzz::experiment_one(data, size);
  return 0;
}
#endif
