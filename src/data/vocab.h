// The vocabulary size of a run from its data: model.vocab_size 0 takes the data's (256 for text,
// the largest token + 1 for a .bin token file); an explicit one must cover every token.
#pragma once
#include "config/config.h"
#include "data/tokens.h"

namespace dsmoe {

// Throws naming the key and the data when an explicit size is too small.
void resolve_vocab(Config& cfg, const TokenData& data);

}  // namespace dsmoe
