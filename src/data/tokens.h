// Token data: byte-level text files, llm.c-layout .bin token files, and the default corpus
// (GCIDE from Debian's dict-gcide, prepared once into a .bin file).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dsmoe {

struct TokenData {
  std::vector<int32_t> tokens;
  int vocab_size = 0;       // 256 for text; for .bin the max token + 1
  std::string source;       // the resolved file path
};

// Where `data.path: default` lives: $DSMOE_DATA_DIR/gcide.bin, else <dir of the executable>/../data/gcide.bin.
std::string default_corpus_path();
// Decompresses /usr/share/dictd/gcide.dict.dz (or `source` if given) into the .bin at `out_path`
// (written to a temporary name and renamed). Returns the number of tokens. Throws if the
// source is missing, naming the Debian package.
int64_t prepare_default_corpus(const std::string& out_path, const std::string& source = "");
// Loads `path` ("default" = the prepared corpus, preparing it on first use). A file ending in
// .bin is read as llm.c layout (256 int32 header: magic 20240520, version 1, count; uint16
// tokens) and checked (magic, version, truncation); any other file is read as bytes.
TokenData load_tokens(const std::string& path);
// Writes tokens in llm.c .bin layout (used by prepare and by tests).
void write_token_bin(const std::string& path, const std::vector<int32_t>& tokens);

}  // namespace dsmoe
