// Checkpoints that another HDF5 tool wrote: h5py with its default settings (HDF5 superblock
// version 0, as a PyTorch conversion script writes them), at step 0 without the optional
// attributes of the last step, resume, evaluate and generate exactly like the same weights
// written by dsmoe; damaged ones are refused with an error naming them and exit status 1, never
// a crash or a hang of dsmoe (docs/model.md, Checkpoint).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "test_util.h"
#include "train_fixture.h"

namespace dsmoe {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

constexpr const char* kPython = "/usr/bin/python3";  // Debian's, with python3-h5py

bool have_h5py() {
  return test::run_command_result(std::string(kPython) + " -c 'import h5py' 2>/dev/null").exit_code == 0;
}

// tests/h5py_checkpoint.py: `src` (dsmoe's) rewritten by h5py with its defaults, at step 0 with
// only the required objects.
void rewrite_with_h5py(const std::string& src, const std::string& dst) {
  const test::RunResult r = test::run_command_result(cat(kPython, " ", DSMOE_SOURCE_DIR, "/tests/h5py_checkpoint.py ",
                                                         src, " ", dst, " 2>&1"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
}

int superblock_version(const std::string& path) { return static_cast<unsigned char>(test::read_file(path).at(8)); }

// The tiny model's runs, each in a folder of its own under one temporary folder.
struct Runs {
  test::TempDir dir;
  std::string corpus = dir.file("corpus.txt");
  Runs() { test::write_file(corpus, test::make_corpus(400, 3)); }
  std::string out(const std::string& name) const { return dir.file(name); }
  // `dsmoe train` of the tiny config into out(name) for 3 steps.
  test::RunResult train(const std::string& name) const {
    const std::string cfg = dir.file(name + ".yaml");
    test::write_file(cfg, test::tiny_yaml(corpus, out(name)));
    return test::run_dsmoe(cat("train ", cfg, " --set train.steps=3 --set train.eval_every=0"));
  }
  // The losses of the steps of train(name).
  std::vector<double> losses(const std::string& name) const {
    const test::RunResult r = train(name);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return test::read_series(out(name) + "/metrics.h5", "train/loss");
  }
  // dsmoe's own step-0 checkpoint of the freshly initialized model, in out(name).
  std::string write_step0(const std::string& name) const {
    auto comm = make_single_comm();
    Engine engine(parse_config(test::tiny_yaml(corpus, out(name)), "tiny.yaml"), *comm);
    fs::create_directories(out(name));
    engine.save_checkpoint(out(name) + "/checkpoint.h5", StepStats{});
    return out(name) + "/checkpoint.h5";
  }
};

// `bytes` (a file h5py wrote) with the global heap index of the root's `config` attribute (a
// variable-length string) far out of range: HDF5 1.10 reads that object of the heap without a
// bounds check. The attribute message (version 1) holds the name "config" padded to 8 bytes, the
// string type (20 bytes, padded to 24), the scalar dataspace (8), then the value: the length (4),
// the heap collection's address (8) and the object's index (4).
std::string with_bad_heap_index(std::string bytes) {
  const size_t name = bytes.find(std::string("config\0", 7));
  EXPECT_NE(name, std::string::npos);
  bytes.replace(name + 8 + 24 + 8 + 4 + 8, 4, "\x01\xff\xff\x7f");
  return bytes;
}

std::string line_with(const std::string& text, const std::string& what) {
  const size_t at = text.find(what);
  if (at == std::string::npos) return "(no line with " + what + ")";
  const size_t begin = text.rfind('\n', at) + 1, end = text.find('\n', at);
  return text.substr(begin, end - begin);
}

TEST(CheckpointH5py, Step0WrittenByH5pyResumesEvaluatesAndGeneratesLikeDsmoes) {
  if (!have_h5py()) GTEST_SKIP() << "no h5py for " << kPython << " (python3-h5py)";
  Runs runs;
  const std::string ours = runs.write_step0("ours");
  const std::string theirs = runs.out("h5py") + "/checkpoint.h5", kept = runs.dir.file("h5py-step0.h5");
  fs::create_directories(runs.out("h5py"));
  rewrite_with_h5py(ours, theirs);
  ASSERT_EQ(superblock_version(theirs), 0);
  {
    h5::Handle f = h5::open_file(theirs, H5F_ACC_RDONLY);
    ASSERT_TRUE(f.valid());
    for (const char* optional : {"loss", "aux_loss", "lr", "grad_norm"}) ASSERT_FALSE(h5::has_attr(f, optional));
    ASSERT_FALSE(h5::exists(f, "optimizer"));
  }
  fs::copy_file(theirs, kept);  // `dsmoe train` replaces checkpoint.h5

  for (const std::string& ck : {ours, kept}) EXPECT_EQ(read_checkpoint_meta(ck).loss, 0.0);
  const test::RunResult eval_ours = test::run_dsmoe("eval --checkpoint " + ours);
  const test::RunResult eval_theirs = test::run_dsmoe("eval --checkpoint " + kept);
  ASSERT_EQ(eval_theirs.exit_code, 0) << eval_theirs.output;
  EXPECT_EQ(line_with(eval_theirs.output, "val loss"), line_with(eval_ours.output, "val loss"));
  const std::string generate = " --prompt 'the cat' --max-new-tokens 24 --temperature 0";
  const test::RunResult gen_ours = test::run_dsmoe("generate --checkpoint " + ours + generate);
  const test::RunResult gen_theirs = test::run_dsmoe("generate --checkpoint " + kept + generate);
  ASSERT_EQ(gen_theirs.exit_code, 0) << gen_theirs.output;
  EXPECT_EQ(gen_theirs.output, gen_ours.output);

  const std::vector<double> from_ours = runs.losses("ours"), from_theirs = runs.losses("h5py");
  EXPECT_EQ(from_theirs.size(), 3u);
  EXPECT_EQ(from_theirs, from_ours);  // bit-identical: the same weights, moments zero
  EXPECT_EQ(runs.losses("fresh"), from_ours);  // and they are the freshly initialized model's
}

// A damaged file of superblock version 0: HDF5 parses its metadata without checksums.
TEST(CheckpointH5py, DamagedVersion0FilesAreRefusedNamingThemWithExitStatus1) {
  if (!have_h5py()) GTEST_SKIP() << "no h5py for " << kPython << " (python3-h5py)";
  Runs runs;
  const std::string good = runs.dir.file("good.h5");
  rewrite_with_h5py(runs.write_step0("ours"), good);
  const std::string bytes = test::read_file(good);
  const std::string truncated = runs.dir.file("truncated.h5"), flipped = runs.dir.file("flipped.h5");
  test::write_file(truncated, bytes.substr(0, bytes.size() / 2));
  test::write_file(flipped, with_bad_heap_index(bytes));
  for (const std::string& damaged : {truncated, flipped}) {
    for (const char* command : {"eval --checkpoint ", "generate --checkpoint "}) {
      const test::RunResult r = test::run_dsmoe(command + damaged);
      EXPECT_EQ(r.exit_code, 1) << command << damaged << ": " << r.output;  // not 128 + a signal
      EXPECT_THAT(r.output, HasSubstr(damaged + ": ")) << command;
    }
  }
  const std::string resumed = runs.out("damaged") + "/checkpoint.h5";
  fs::create_directories(runs.out("damaged"));
  fs::copy_file(flipped, resumed);
  const test::RunResult r = runs.train("damaged");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("cannot resume from " + resumed + ": " + resumed + ": "));
}

}  // namespace
}  // namespace dsmoe
