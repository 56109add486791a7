// Fuzz target: the token-file reader (src/data/tokens*). The bytes are written to a .bin file,
// which loads (then every token is below vocab_size) or fails with an error naming the file.
#include "data/tokens.h"
#include "fuzz_targets.h"

namespace dsmoe::fuzz {

void tokens_one(const uint8_t* data, size_t size) {
  TempInput in(data, size, ".bin");
  TokenData d;
  if (!loads(in.path, [&] { d = load_tokens(in.path); })) return;
  if (d.tokens.empty()) finding("a token file without tokens loaded");
  for (int32_t t : d.tokens)
    if (t < 0 || t >= d.vocab_size) finding("token ", t, " outside vocab_size ", d.vocab_size);
}

}  // namespace dsmoe::fuzz

#ifdef DSMOE_LIBFUZZER
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dsmoe::fuzz::tokens_one(data, size);
  return 0;
}
#endif
