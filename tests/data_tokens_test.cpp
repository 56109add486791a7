#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "data/tokens.h"
#include "test_util.h"
#include "util/check.h"

namespace dsmoe {
namespace {

using test::TempDir;
using test::write_file;

using test::error_of;

void write_header(const std::string& path, int32_t magic, int32_t version, int32_t count,
                  int payload_bytes) {
  std::vector<int32_t> header(256, 0);
  header[0] = magic;
  header[1] = version;
  header[2] = count;
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(header.data()), 1024);
  f << std::string(payload_bytes, '\0');
}

void write_gzip(const std::string& path, const std::string& text) {
  gzFile gz = gzopen(path.c_str(), "wb");
  ASSERT_NE(gz, nullptr);
  ASSERT_EQ(gzwrite(gz, text.data(), static_cast<unsigned>(text.size())), static_cast<int>(text.size()));
  ASSERT_EQ(gzclose(gz), Z_OK);
}

// Sets an environment variable for one test and restores the previous value.
struct ScopedEnv {
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) {
      old_ = old;
      had_ = true;
    }
    if (value)
      setenv(name, value, 1);
    else
      unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_)
      setenv(name_, old_.c_str(), 1);
    else
      unsetenv(name_);
  }
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(Tokens, BinRoundTrip) {
  TempDir dir;
  const std::string path = dir.file("t.bin");
  const std::vector<int32_t> tokens = {5, 0, 65535, 42, 7};
  write_token_bin(path, tokens);
  EXPECT_EQ(std::filesystem::file_size(path), 1024u + 2 * tokens.size());
  TokenData d = load_tokens(path);
  EXPECT_EQ(d.tokens, tokens);
  EXPECT_EQ(d.vocab_size, 65536);
  EXPECT_EQ(d.source, path);

  write_token_bin(path, {3, 1, 2});
  EXPECT_EQ(load_tokens(path).vocab_size, 4);
}

TEST(Tokens, WriteRejectsTokensOutsideUint16) {
  TempDir dir;
  EXPECT_NE(error_of([&] { write_token_bin(dir.file("t.bin"), {1, 65536}); }).find("uint16"),
            std::string::npos);
  EXPECT_NE(error_of([&] { write_token_bin(dir.file("t.bin"), {-1}); }).find("uint16"), std::string::npos);
}

TEST(Tokens, MissingFile) {
  TempDir dir;
  const std::string path = dir.file("nope.bin");
  EXPECT_EQ(error_of([&] { load_tokens(path); }), path + ": cannot open data file");
  EXPECT_EQ(error_of([&] { load_tokens(dir.file("nope.txt")); }), dir.file("nope.txt") + ": cannot open data file");
  EXPECT_EQ(error_of([&] { load_tokens(dir.path); }), dir.path + ": cannot open data file");
}

TEST(Tokens, TruncatedHeader) {
  TempDir dir;
  const std::string path = dir.file("t.bin");
  write_file(path, std::string(100, 'x'));
  EXPECT_EQ(error_of([&] { load_tokens(path); }), path + ": truncated header (100 bytes, need 1024)");
}

TEST(Tokens, TruncatedPayload) {
  TempDir dir;
  const std::string path = dir.file("t.bin");
  write_token_bin(path, std::vector<int32_t>(10, 1));
  std::filesystem::resize_file(path, 1024 + 2 * 7);
  EXPECT_EQ(error_of([&] { load_tokens(path); }), path + ": truncated: header says 10 tokens, file holds 7");
}

TEST(Tokens, PayloadLongerThanCount) {
  TempDir dir;
  const std::string path = dir.file("t.bin");
  write_header(path, 20240520, 1, 3, 7);
  std::string e = error_of([&] { load_tokens(path); });
  EXPECT_EQ(e.rfind(path + ": header says 3 tokens", 0), 0u) << e;
}

TEST(Tokens, BadMagicAndVersion) {
  TempDir dir;
  const std::string path = dir.file("t.bin");
  write_header(path, 123, 1, 2, 4);
  EXPECT_EQ(error_of([&] { load_tokens(path); }),
            path + ": not an llm.c token file (magic 123, expected 20240520)");
  write_header(path, 20240520, 2, 2, 4);
  std::string e = error_of([&] { load_tokens(path); });
  EXPECT_EQ(e.rfind(path + ": unsupported llm.c token file version 2", 0), 0u) << e;
}

TEST(Tokens, ZeroCount) {
  TempDir dir;
  const std::string path = dir.file("t.bin");
  write_header(path, 20240520, 1, 0, 0);
  std::string e = error_of([&] { load_tokens(path); });
  EXPECT_EQ(e.rfind(path + ": holds no tokens", 0), 0u) << e;
}

TEST(Tokens, TextIsByteLevel) {
  TempDir dir;
  const std::string path = dir.file("t.txt");
  write_file(path, std::string("A\xff\x80\n\0z", 6));
  TokenData d = load_tokens(path);
  EXPECT_EQ(d.tokens, (std::vector<int32_t>{65, 255, 128, 10, 0, 122}));
  EXPECT_EQ(d.vocab_size, 256);
  EXPECT_EQ(d.source, path);
}

TEST(Tokens, EmptyTextFile) {
  TempDir dir;
  const std::string path = dir.file("empty.txt");
  write_file(path, "");
  EXPECT_EQ(error_of([&] { load_tokens(path); }), path + ": empty data file");
}

TEST(Tokens, PrepareFromGzip) {
  TempDir dir;
  const std::string src = dir.file("small.dict.dz");
  const std::string text = "hello\xe9 world\n";
  write_gzip(src, text);
  const std::string out = dir.file("sub/dir/corpus.bin");
  EXPECT_EQ(prepare_default_corpus(out, src), static_cast<int64_t>(text.size()));
  TokenData d = load_tokens(out);
  ASSERT_EQ(d.tokens.size(), text.size());
  for (size_t i = 0; i < text.size(); ++i) EXPECT_EQ(d.tokens[i], static_cast<unsigned char>(text[i]));
  EXPECT_EQ(d.vocab_size, 0xe9 + 1);
  // Only the result remains: the temporary file was renamed.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.file("sub/dir"))) files += !e.is_directory();
  EXPECT_EQ(files, 1);
}

TEST(Tokens, PrepareMissingSourceNamesThePackage) {
  TempDir dir;
  const std::string src = dir.file("gcide.dict.dz");
  std::string e = error_of([&] { prepare_default_corpus(dir.file("out.bin"), src); });
  EXPECT_EQ(e.rfind(src + ":", 0), 0u) << e;
  EXPECT_NE(e.find("install Debian's dict-gcide (apt-get install dict-gcide)"), std::string::npos) << e;
  EXPECT_FALSE(std::filesystem::exists(dir.file("out.bin")));
}

TEST(Tokens, DefaultCorpusPath) {
  {
    ScopedEnv env("DSMOE_DATA_DIR", "/some/dir");
    EXPECT_EQ(default_corpus_path(), "/some/dir/gcide.bin");
  }
  ScopedEnv env("DSMOE_DATA_DIR", nullptr);
  // The test binary lives in <build>/tests, so "../data" is <build>/data.
  auto exe = std::filesystem::read_symlink("/proc/self/exe");
  EXPECT_EQ(default_corpus_path(), (exe.parent_path().parent_path() / "data" / "gcide.bin").string());
}

TEST(Tokens, DefaultLoadsThePreparedFile) {
  TempDir dir;
  ScopedEnv env("DSMOE_DATA_DIR", dir.path.c_str());
  write_token_bin(dir.file("gcide.bin"), {1, 2, 3});
  TokenData d = load_tokens("default");
  EXPECT_EQ(d.tokens, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(d.source, dir.file("gcide.bin"));
}

// Prepares the real corpus when Debian's dict-gcide is installed (about 40 MB of text).
TEST(Tokens, DefaultPreparesOnFirstUse) {
  if (!std::filesystem::exists("/usr/share/dictd/gcide.dict.dz")) GTEST_SKIP() << "dict-gcide not installed";
  TempDir dir;
  ScopedEnv env("DSMOE_DATA_DIR", (dir.path + "/data").c_str());
  testing::internal::CaptureStdout();
  TokenData d = load_tokens("default");
  std::string out = testing::internal::GetCapturedStdout();
  EXPECT_NE(out.find("/usr/share/dictd/gcide.dict.dz"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  EXPECT_GT(d.tokens.size(), 10000000u);
  EXPECT_LE(d.vocab_size, 256);
  EXPECT_TRUE(std::filesystem::exists(dir.path + "/data/gcide.bin"));

  testing::internal::CaptureStdout();
  EXPECT_EQ(load_tokens("default").tokens.size(), d.tokens.size());
  EXPECT_EQ(testing::internal::GetCapturedStdout(), "");
}

}  // namespace
}  // namespace dsmoe
