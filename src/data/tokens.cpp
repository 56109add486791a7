#include "data/tokens.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "util/check.h"
#include "util/log.h"

namespace dsmoe {
namespace {

namespace fs = std::filesystem;

constexpr int32_t kMagic = 20240520;
constexpr int32_t kVersion = 1;
constexpr int kHeaderInts = 256;
constexpr uint64_t kHeaderBytes = kHeaderInts * sizeof(int32_t);
const char* const kDefaultSource = "/usr/share/dictd/gcide.dict.dz";

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};

File open_data_file(const std::string& path, uint64_t* size) {
  std::error_code ec;
  File f;
  if (fs::is_regular_file(path, ec)) f.reset(std::fopen(path.c_str(), "rb"));
  DSMOE_CHECK(f, path, ": cannot open data file");
  *size = fs::file_size(path, ec);
  DSMOE_CHECK(!ec, path, ": cannot read the file size: ", ec.message());
  return f;
}

void read_exact(std::FILE* f, void* dst, size_t bytes, const std::string& path) {
  DSMOE_CHECK(std::fread(dst, 1, bytes, f) == bytes, path, ": read error");
}

TokenData load_bin(const std::string& path) {
  uint64_t size = 0;
  File f = open_data_file(path, &size);
  DSMOE_CHECK(size >= kHeaderBytes, path, ": truncated header (", size, " bytes, need ", kHeaderBytes, ")");
  int32_t header[kHeaderInts];
  read_exact(f.get(), header, kHeaderBytes, path);
  DSMOE_CHECK(header[0] == kMagic, path, ": not an llm.c token file (magic ", header[0], ", expected ",
              kMagic, ")");
  DSMOE_CHECK(header[1] == kVersion, path, ": unsupported llm.c token file version ", header[1],
              " (expected ", kVersion, ")");
  const int64_t count = header[2];
  DSMOE_CHECK(count > 0, path, ": holds no tokens (header count ", count, ")");
  const uint64_t payload = size - kHeaderBytes;
  const int64_t held = static_cast<int64_t>(payload / sizeof(uint16_t));
  DSMOE_CHECK(held >= count, path, ": truncated: header says ", count, " tokens, file holds ", held);
  DSMOE_CHECK(payload == count * sizeof(uint16_t), path, ": header says ", count, " tokens, file holds ",
              payload, " bytes after the header (expected ", count * sizeof(uint16_t), ")");

  std::vector<uint16_t> raw(count);
  read_exact(f.get(), raw.data(), payload, path);
  TokenData d;
  d.tokens.assign(raw.begin(), raw.end());
  d.vocab_size = *std::max_element(raw.begin(), raw.end()) + 1;
  d.source = path;
  return d;
}

TokenData load_text(const std::string& path) {
  uint64_t size = 0;
  File f = open_data_file(path, &size);
  DSMOE_CHECK(size > 0, path, ": empty data file");
  std::vector<unsigned char> bytes(size);
  read_exact(f.get(), bytes.data(), size, path);
  TokenData d;
  d.tokens.assign(bytes.begin(), bytes.end());
  d.vocab_size = 256;
  d.source = path;
  return d;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::string default_corpus_path() {
  const char* dir = std::getenv("DSMOE_DATA_DIR");
  if (dir && *dir) return std::string(dir) + "/gcide.bin";
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  DSMOE_CHECK(!ec, "cannot locate the executable through /proc/self/exe (", ec.message(),
              "); set DSMOE_DATA_DIR");
  return (exe.parent_path().parent_path() / "data" / "gcide.bin").string();
}

int64_t prepare_default_corpus(const std::string& out_path, const std::string& source) {
  const std::string src = source.empty() ? kDefaultSource : source;
  std::error_code ec;
  DSMOE_CHECK(fs::is_regular_file(src, ec), src,
              ": not found; the default corpus is made from it: install Debian's dict-gcide "
              "(apt-get install dict-gcide)");
  std::unique_ptr<gzFile_s, GzCloser> gz(gzopen(src.c_str(), "rb"));
  DSMOE_CHECK(gz, src, ": cannot open");
  gzbuffer(gz.get(), 1 << 20);

  std::string text;
  std::vector<unsigned char> buf(1 << 20);
  for (;;) {
    int n = gzread(gz.get(), buf.data(), static_cast<unsigned>(buf.size()));
    int err = Z_OK;
    DSMOE_CHECK(n >= 0, src, ": decompression failed: ", gzerror(gz.get(), &err));
    if (n == 0) break;
    text.append(buf.begin(), buf.begin() + n);
  }
  DSMOE_CHECK(!text.empty(), src, ": holds no text");
  const std::vector<int32_t> tokens(reinterpret_cast<const unsigned char*>(text.data()),
                                    reinterpret_cast<const unsigned char*>(text.data()) + text.size());

  fs::path parent = fs::path(out_path).parent_path();
  if (!parent.empty()) {
    fs::create_directories(parent, ec);
    DSMOE_CHECK(!ec, parent.string(), ": cannot create directory: ", ec.message());
  }
  // The pid keeps ranks that prepare at the same time from writing into one temporary file.
  const std::string tmp = out_path + ".tmp." + std::to_string(getpid());
  try {
    write_token_bin(tmp, tokens);
    DSMOE_CHECK(std::rename(tmp.c_str(), out_path.c_str()) == 0, out_path, ": cannot rename ", tmp,
                " to it");
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  return static_cast<int64_t>(tokens.size());
}

TokenData load_tokens(const std::string& path) {
  if (path == "default") {
    const std::string bin = default_corpus_path();
    std::error_code ec;
    if (!fs::exists(bin, ec)) {
      int64_t n = prepare_default_corpus(bin);
      log_info("data: prepared the default corpus from ", kDefaultSource, ": ", n, " tokens in ", bin);
    }
    return load_bin(bin);
  }
  return ends_with(path, ".bin") ? load_bin(path) : load_text(path);
}

void write_token_bin(const std::string& path, const std::vector<int32_t>& tokens) {
  DSMOE_CHECK(tokens.size() <= static_cast<size_t>(INT32_MAX), path, ": ", tokens.size(),
              " tokens do not fit an llm.c token file");
  std::vector<uint16_t> raw(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    DSMOE_CHECK(tokens[i] >= 0 && tokens[i] <= UINT16_MAX, path, ": token ", tokens[i], " at index ", i,
                " does not fit in uint16");
    raw[i] = static_cast<uint16_t>(tokens[i]);
  }
  int32_t header[kHeaderInts] = {kMagic, kVersion, static_cast<int32_t>(tokens.size())};

  File f(std::fopen(path.c_str(), "wb"));
  DSMOE_CHECK(f, path, ": cannot open for writing");
  bool ok = std::fwrite(header, 1, kHeaderBytes, f.get()) == kHeaderBytes &&
            std::fwrite(raw.data(), sizeof(uint16_t), raw.size(), f.get()) == raw.size();
  ok = (std::fclose(f.release()) == 0) && ok;
  DSMOE_CHECK(ok, path, ": write error");
}

}  // namespace dsmoe
