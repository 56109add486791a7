#include "data/vocab.h"

#include "util/check.h"

namespace dsmoe {

void resolve_vocab(Config& cfg, const TokenData& data) {
  if (cfg.model.vocab_size == 0) {
    cfg.model.vocab_size = data.vocab_size;
    return;
  }
  DSMOE_CHECK(cfg.model.vocab_size >= data.vocab_size, cfg.source, ": model.vocab_size: ", cfg.model.vocab_size,
              " is too small for ", data.source, ", whose largest token is ", data.vocab_size - 1);
}

}  // namespace dsmoe
