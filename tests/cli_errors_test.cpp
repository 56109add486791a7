// The dsmoe executable on bad input: it says what is wrong (file, line, key) and exits
// non-zero; --help works everywhere.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "test_util.h"
#include "train_fixture.h"

namespace dsmoe {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using test::run_dsmoe;
using test::TempDir;

struct Cli : ::testing::Test {
  TempDir dir;
  std::string corpus = dir.file("corpus.txt");
  void SetUp() override { test::write_file(corpus, test::make_corpus(400, 3)); }
  std::string config(const std::string& name = "run.yaml") {
    std::string path = dir.file(name);
    test::write_file(path, test::tiny_yaml(corpus, dir.file("out")));
    return path;
  }
};

TEST_F(Cli, HelpForEveryCommand) {
  for (const char* cmd : {"", "train ", "eval ", "generate ", "info ", "data ", "bench "}) {
    test::RunResult r = run_dsmoe(std::string(cmd) + "--help");
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_THAT(r.output, HasSubstr("usage: dsmoe")) << cmd;
  }
  EXPECT_EQ(run_dsmoe("").exit_code, 2);
  EXPECT_THAT(run_dsmoe("frobnicate").output, HasSubstr("unknown command 'frobnicate'"));
}

TEST_F(Cli, UnknownKeyNamesFileLineAndKey) {
  std::string path = dir.file("bad.yaml");
  test::write_file(path, "name: x\nmodel:\n  d_model: 32\n  n_hedas: 2\n");
  test::RunResult r = run_dsmoe("train " + path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr(path + ":4: model.n_hedas: unknown key (did you mean model.n_heads?)"));
}

TEST_F(Cli, WrongTypeAndImpossibleCombination) {
  test::RunResult r = run_dsmoe("info " + config("a.yaml") + " --set model.d_model=abc");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("--set model.d_model=abc: expected an integer"));
  r = run_dsmoe("info " + config("b.yaml") + " --set moe.top_k=9");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("moe.top_k"));
  r = run_dsmoe("train " + config() + " --set train.micro_batches=3");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("train.micro_batches"));
  r = run_dsmoe("train " + config() + " --max-skipped-steps -1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("--max-skipped-steps must be >= 0"));
}

TEST_F(Cli, MalformedYamlAndMissingConfig) {
  std::string path = dir.file("broken.yaml");
  test::write_file(path, "model: [1, 2\n");
  test::RunResult r = run_dsmoe("train " + path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr(path + ":"));
  r = run_dsmoe("train " + dir.file("nope.yaml"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("nope.yaml: cannot open config file"));
}

TEST_F(Cli, MissingAndTruncatedDataFiles) {
  test::RunResult r = run_dsmoe("train " + config() + " --set data.path=" + dir.file("missing.bin"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("missing.bin: cannot open data file"));
  std::string bin = dir.file("short.bin");
  std::ofstream(bin) << std::string(100, 'x');
  r = run_dsmoe("train " + config() + " --set data.path=" + bin);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("short.bin: truncated header"));
}

TEST_F(Cli, EvaluationLargerThanTheValidationSplitFailsBeforeTraining) {
  // tiny's corpus: 10 % of its tokens validate, windows of 33 tokens; 1000 x 8 sequences cannot fit.
  test::RunResult r = run_dsmoe("train " + config() + " --set train.eval_batches=1000");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr(config() + ": train.eval_batches x train.batch_size = 8000 evaluation sequences "
                                  "of 33 tokens, but the validation split of "));
  EXPECT_THAT(r.output, HasSubstr("lower train.eval_batches or raise data.val_fraction"));
  EXPECT_THAT(r.output, Not(HasSubstr("step 1")));
  EXPECT_FALSE(std::filesystem::exists(dir.file("out/checkpoint.h5")));
}

TEST_F(Cli, TrainsEvaluatesGeneratesAndRefusesABadCheckpoint) {
  std::string cfg = config() + " --set train.steps=3 --set train.eval_every=0 --set train.eval_batches=1";
  test::RunResult r = run_dsmoe("train " + cfg);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("step 3/3 | loss "));
  EXPECT_THAT(r.output, HasSubstr("checkpoint: " + dir.file("out") + "/checkpoint.h5"));
  const std::string ck = dir.file("out/checkpoint.h5");

  r = run_dsmoe("eval --checkpoint " + ck);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("val loss "));
  r = run_dsmoe("generate --checkpoint " + ck + " --prompt 'the cat' --max-new-tokens 5 --temperature 0");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.rfind("the cat", 0), 0u);
  EXPECT_EQ(r.output.size(), std::string("the cat").size() + 5 + 1);

  // Training again is a resume that has nothing left to do.
  r = run_dsmoe("train " + cfg);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("nothing to do"));

  // A checkpoint of another model shape is refused, naming the tensor.
  r = run_dsmoe("train " + cfg + " --set model.d_model=48 --set train.steps=6");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("cannot resume from " + ck));
  EXPECT_THAT(r.output, HasSubstr("tok_embedding"));

  // A truncated checkpoint is refused with the path, not a crash.
  std::string data = test::read_file(ck);
  test::write_file(ck, data.substr(0, data.size() / 2));
  r = run_dsmoe("eval --checkpoint " + ck);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr(ck));
  r = run_dsmoe("train " + cfg + " --set train.steps=6");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("cannot resume from " + ck));
  r = run_dsmoe("eval --checkpoint " + dir.file("none.h5"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("none.h5"));
}

// What a user gets wrong on the command line: each message says what to do instead.
TEST_F(Cli, MistakesSayWhatToDoInstead) {
  // A forgotten --set.
  test::RunResult r = run_dsmoe("train " + config() + " train.steps=3");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("train.steps=3: a config override needs --set before it (--set train.steps=3)"));
  // Arguments after -- are only submit's (for sbatch).
  r = run_dsmoe("info " + config() + " -- --account=a");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("dsmoe info takes no arguments after --"));
  // An experiment file given to train, a run config given to sweep.
  const std::string exp = dir.file("exp.yaml");
  test::write_file(exp, "experiment: e\nsweep:\n  - name: a\n");
  r = run_dsmoe("train " + exp);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr(exp + ":1: experiment: unknown key: this is an experiment file, not a run "
                                  "config: run it with `dsmoe sweep FILE`"));
  r = run_dsmoe("sweep " + config());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr(":1: name: a run config's key: this is a run config, not an experiment file: "
                                  "train it with `dsmoe train FILE`"));

  // eval's hints name eval's options.
  ASSERT_EQ(run_dsmoe("train " + config() + " --set train.steps=2 --set train.eval_batches=1").exit_code, 0);
  const std::string ck = dir.file("out/checkpoint.h5");
  r = run_dsmoe("eval --checkpoint " + ck + " --batches 100000");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("--batches 100000: the validation split of " + corpus + " holds "));
  EXPECT_THAT(r.output, HasSubstr("or fewer, or a larger corpus with --data"));
  EXPECT_THAT(r.output, Not(HasSubstr("train.eval_batches")));
  std::filesystem::rename(corpus, corpus + ".moved");
  r = run_dsmoe("eval --checkpoint " + ck);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr(corpus + ": cannot open data file (the data of the checkpoint's run; --data PATH "
                                  "names another copy or corpus)"));
  r = run_dsmoe("eval --checkpoint " + ck + " --data " + corpus + ".moved --batches 1");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST_F(Cli, CudaBackendWithoutAGpuIsRefused) {
  if (std::filesystem::exists("/dev/nvidia0")) GTEST_SKIP() << "this machine has a GPU";
  test::RunResult r = run_dsmoe("train " + config() + " --set backend=cuda");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("backend: cuda needs a GPU per rank, but node "));
  EXPECT_THAT(r.output, HasSubstr(" runs 1 rank(s) and sees 0 GPU(s)"));
}

TEST_F(Cli, InfoReportsParametersAndFlops) {
  test::RunResult r = run_dsmoe("info " + std::string(DSMOE_SOURCE_DIR) + "/experiments/quickstart.yaml");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Hand count for quickstart (d 256, V 256, 4 layers, 1 dense of 1024, 3 MoE of 1+16 experts
  // of 256, top-2): total 12,007,680; active 3,750,144; FLOPs 6*(3,750,144 - 65,536 - 2,304)
  // + 6*4*256*256 = 23,666,688.
  EXPECT_THAT(r.output, HasSubstr("12,007,680"));
  EXPECT_THAT(r.output, HasSubstr("3,750,144"));
  EXPECT_THAT(r.output, HasSubstr("2.367e+07"));
  // Memory at each recompute setting (quickstart: backend auto, so CPU and CUDA rows). On the
  // CPU, recompute attention keeps one layer's q, k, v, attention output (4 R d) and
  // probabilities (B H T T) instead of four: 3 x (4 x 8192 x 256 + 32 x 4 x 256 x 256) floats
  // = 192 MiB less.
  auto total = [&](const std::string& row) {
    const size_t at = r.output.find(row);
    EXPECT_NE(at, std::string::npos) << row << " missing in\n" << r.output;
    return at == std::string::npos ? 0.0 : std::stod(r.output.substr(at + row.size()));
  };
  EXPECT_NEAR(total("cpu        recompute none") - total("cpu        recompute attention"), 192.0, 0.11);
  EXPECT_GT(total("cuda fp32  recompute none"), total("cuda fp32  recompute attention"));
}

}  // namespace
}  // namespace dsmoe
