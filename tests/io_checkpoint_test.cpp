#include <gtest/gtest.h>
#include <hdf5.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>

#include "checkpoint_table.h"
#include "io/checkpoint.h"
#include "test_util.h"
#include "util/check.h"

namespace dsmoe {
namespace {

using test::read_file;
using test::TempDir;

using test::error_of;

std::vector<float> random_floats(int64_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(gen);
  return v;
}

CheckpointState random_state(const ParamTable& table, const std::vector<int>& moe_layers,
                             int n_routed) {
  CheckpointState s;
  s.params = random_floats(table.size(), 1);
  s.m = random_floats(table.size(), 2);
  s.v = random_floats(table.size(), 3);
  s.optimizer_step = 41;
  s.moe_layers = moe_layers;
  for (size_t i = 0; i < moe_layers.size(); ++i) s.bias.push_back(random_floats(n_routed, 4 + i));
  s.meta.step = 42;
  s.meta.tokens_seen = 1234567890123;
  s.meta.config_yaml = "model:\n  d_model: 4\n# café\n";
  s.meta.loss = 2.5;
  s.meta.aux_loss = 0.125;
  s.meta.lr = 3e-4;
  s.meta.grad_norm = 0.75;
  return s;
}

std::string read(const std::string& path, const ParamTable& t) {
  return error_of([&] { read_checkpoint(path, t, {1}, 4); });
}

bool bits_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(Checkpoint, RoundTripIsBitExact) {
  TempDir dir;
  ParamTable table = small_checkpoint_table();
  CheckpointState s = random_state(table, {1, 3}, 4);
  s.meta.config_yaml += std::string(100000, 'x');  // beyond compact attribute storage
  write_checkpoint(dir.file("c.h5"), table, s);
  CheckpointState r = read_checkpoint(dir.file("c.h5"), table, {1, 3}, 4);
  EXPECT_TRUE(bits_equal(r.params, s.params));
  EXPECT_TRUE(bits_equal(r.m, s.m));
  EXPECT_TRUE(bits_equal(r.v, s.v));
  ASSERT_EQ(r.bias.size(), 2u);
  EXPECT_TRUE(bits_equal(r.bias[0], s.bias[0]));
  EXPECT_TRUE(bits_equal(r.bias[1], s.bias[1]));
  EXPECT_EQ(r.moe_layers, (std::vector<int>{1, 3}));
  EXPECT_EQ(r.optimizer_step, 41);
  for (const CheckpointMeta& m : {r.meta, read_checkpoint_meta(dir.file("c.h5"))}) {
    EXPECT_EQ(m.step, 42);
    EXPECT_EQ(m.tokens_seen, 1234567890123);
    EXPECT_EQ(m.config_yaml, s.meta.config_yaml);
    EXPECT_EQ(m.loss, 2.5);
    EXPECT_EQ(m.aux_loss, 0.125);
    EXPECT_EQ(m.lr, 3e-4);
    EXPECT_EQ(m.grad_norm, 0.75);
  }
}

// Layout checks through the HDF5 C API, independent of the io code.
std::vector<hsize_t> dataset_shape(hid_t file, const std::string& path, H5T_class_t* cls,
                                   size_t* size) {
  hid_t d = H5Dopen2(file, path.c_str(), H5P_DEFAULT);
  if (d < 0) return {999};
  hid_t space = H5Dget_space(d), type = H5Dget_type(d);
  std::vector<hsize_t> dims(static_cast<size_t>(H5Sget_simple_extent_ndims(space)));
  H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  *cls = H5Tget_class(type);
  *size = H5Tget_size(type);
  H5Tclose(type);
  H5Sclose(space);
  H5Dclose(d);
  return dims;
}

void expect_attr(hid_t loc, const char* name, H5T_class_t cls, size_t size) {
  hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
  ASSERT_GE(a, 0) << name;
  hid_t type = H5Aget_type(a);
  EXPECT_EQ(H5Tget_class(type), cls) << name;
  if (cls == H5T_STRING) {
    EXPECT_GT(H5Tis_variable_str(type), 0) << name;
    EXPECT_EQ(H5Tget_cset(type), H5T_CSET_UTF8) << name;
  } else {
    EXPECT_EQ(H5Tget_size(type), size) << name;
  }
  H5Tclose(type);
  H5Aclose(a);
}

TEST(Checkpoint, LayoutFollowsModelMd) {
  const int64_t V = 16, d = 8, dh = 12, N = 4, n = 3, ks = 3;
  std::vector<std::pair<std::string, std::vector<int64_t>>> tensors = {
      {"tok_embedding", {V, d}},
      {"lm_head", {V, d}},
      {"final_norm", {d}},
      {"layers/0/attn_norm", {d}},
      {"layers/0/attn/wq", {d, d}},
      {"layers/0/attn/wk", {d, d}},
      {"layers/0/attn/wv", {d, d}},
      {"layers/0/attn/wo", {d, d}},
      {"layers/0/ffn_norm", {d}},
      {"layers/0/ffn/w_gate", {dh, d}},
      {"layers/0/ffn/w_up", {dh, d}},
      {"layers/0/ffn/w_down", {d, dh}},
      {"layers/1/attn_norm", {d}},
      {"layers/1/attn/wq", {d, d}},
      {"layers/1/attn/wk", {d, d}},
      {"layers/1/attn/wv", {d, d}},
      {"layers/1/attn/wo", {d, d}},
      {"layers/1/ffn_norm", {d}},
      {"layers/1/moe/router", {N, d}},
      {"layers/1/moe/shared/w_gate", {ks, d}},
      {"layers/1/moe/shared/w_up", {ks, d}},
      {"layers/1/moe/shared/w_down", {d, ks}},
      {"layers/1/moe/experts/w_gate", {N, n, d}},
      {"layers/1/moe/experts/w_up", {N, n, d}},
      {"layers/1/moe/experts/w_down", {N, d, n}},
  };
  ParamTable table;
  for (const auto& [name, shape] : tensors)
    table.add(name, shape, name.find("experts") != std::string::npos, 0, shape[0]);
  TempDir dir;
  write_checkpoint(dir.file("c.h5"), table, random_state(table, {1}, N));

  hid_t f = H5Fopen(dir.file("c.h5").c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  expect_attr(f, "format", H5T_STRING, 0);
  expect_attr(f, "config", H5T_STRING, 0);
  expect_attr(f, "format_version", H5T_INTEGER, 4);
  expect_attr(f, "step", H5T_INTEGER, 8);
  expect_attr(f, "tokens_seen", H5T_INTEGER, 8);
  for (const char* a : {"loss", "aux_loss", "lr", "grad_norm"}) expect_attr(f, a, H5T_FLOAT, 8);
  hid_t a = H5Aopen(f, "format", H5P_DEFAULT), t = H5Aget_type(a);
  char* format = nullptr;
  ASSERT_GE(H5Aread(a, t, &format), 0);
  EXPECT_STREQ(format, "dsmoe-checkpoint");
  H5free_memory(format);
  H5Tclose(t);
  H5Aclose(a);
  a = H5Aopen(f, "format_version", H5P_DEFAULT);
  int version = 0;
  ASSERT_GE(H5Aread(a, H5T_NATIVE_INT, &version), 0);
  EXPECT_EQ(version, 1);
  H5Aclose(a);

  std::vector<std::pair<std::string, std::vector<int64_t>>> datasets = {
      {"/state/layers/1/moe/bias", {N}}};
  for (const char* prefix : {"/params/", "/optimizer/m/", "/optimizer/v/"})
    for (const auto& [name, shape] : tensors) datasets.push_back({prefix + name, shape});
  for (const auto& [path, shape] : datasets) {
    H5T_class_t cls = H5T_NO_CLASS;
    size_t size = 0;
    std::vector<hsize_t> got = dataset_shape(f, path, &cls, &size);
    EXPECT_EQ(got, std::vector<hsize_t>(shape.begin(), shape.end())) << path;
    EXPECT_EQ(cls, H5T_FLOAT) << path;
    EXPECT_EQ(size, 4u) << path;
  }
  hid_t opt = H5Gopen2(f, "/optimizer", H5P_DEFAULT);
  expect_attr(opt, "step", H5T_INTEGER, 8);
  H5Gclose(opt);
  H5Fclose(f);
}

TEST(Checkpoint, ShardedReadTakesItsExpertRows) {
  TempDir dir;
  ParamTable full = small_checkpoint_table();
  CheckpointState s = random_state(full, {1}, 4);
  write_checkpoint(dir.file("c.h5"), full, s);

  ParamTable half;
  half.add("final_norm", {4});
  half.add("layers/1/moe/experts/w_gate", {2, 3, 2}, true, 2, 4);
  CheckpointState r = read_checkpoint(dir.file("c.h5"), half, {1}, 4);
  const TensorInfo& src = full.get("layers/1/moe/experts/w_gate");
  const float* want = s.params.data() + src.offset + 2 * 3 * 2;
  ASSERT_EQ(r.params.size(), 16u);
  EXPECT_EQ(std::memcmp(r.params.data() + 4, want, 12 * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(r.m.data() + 4, s.m.data() + src.offset + 12, 12 * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(r.params.data(), s.params.data() + full.get("final_norm").offset,
                        4 * sizeof(float)),
            0);
}

// A pair added interleaved (the routed experts' w_gate and w_up) is written as two datasets of
// their own, row-major as docs/model.md lays them out, and reads back into any layout: interleaved,
// one after the other, or a rank's slice of experts.
TEST(Checkpoint, InterleavedPairsAreTheirOwnTensorsOnDisk) {
  ParamTable paired;
  paired.add("final_norm", {2});
  paired.add_pair("layers/1/moe/experts/w_gate", "layers/1/moe/experts/w_up", {4, 3, 2}, true, 0, 4);
  const TensorInfo &gate = paired.get("layers/1/moe/experts/w_gate"), &up = paired.get("layers/1/moe/experts/w_up");
  ASSERT_EQ(paired.size(), 2 + 2 * 24);
  EXPECT_EQ(up.offset, gate.offset + 6);
  EXPECT_EQ(gate.at(6), gate.offset + 12);  // expert 1's first gate element follows expert 0's up rows
  TempDir dir;
  CheckpointState s = random_state(paired, {1}, 4);
  write_checkpoint(dir.file("c.h5"), paired, s);

  hid_t f = H5Fopen(dir.file("c.h5").c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  for (const TensorInfo* t : {&gate, &up}) {
    std::vector<float> disk(24);
    hid_t d = H5Dopen2(f, ("/params/" + t->name).c_str(), H5P_DEFAULT);
    ASSERT_GE(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, disk.data()), 0);
    H5Dclose(d);
    EXPECT_TRUE(bits_equal(disk, tensor_elements(*t, s.params.data()))) << t->name;
    for (int64_t i = 0; i < 24; ++i) ASSERT_EQ(disk[i], s.params[t->offset + i / 6 * 12 + i % 6]) << t->name;
  }
  H5Fclose(f);

  CheckpointState back = read_checkpoint(dir.file("c.h5"), paired, {1}, 4);
  EXPECT_TRUE(bits_equal(back.params, s.params));
  EXPECT_TRUE(bits_equal(back.v, s.v));

  ParamTable apart;  // the same tensors one after the other
  apart.add("final_norm", {2});
  apart.add("layers/1/moe/experts/w_gate", {4, 3, 2}, true, 0, 4);
  apart.add("layers/1/moe/experts/w_up", {4, 3, 2}, true, 0, 4);
  CheckpointState r = read_checkpoint(dir.file("c.h5"), apart, {1}, 4);
  for (const TensorInfo& t : apart.tensors())
    EXPECT_TRUE(bits_equal(tensor_elements(t, r.m.data()), tensor_elements(paired.get(t.name), s.m.data()))) << t.name;

  ParamTable slice;  // experts 2 and 3, interleaved
  slice.add("final_norm", {2});
  slice.add_pair("layers/1/moe/experts/w_gate", "layers/1/moe/experts/w_up", {2, 3, 2}, true, 2, 4);
  CheckpointState h = read_checkpoint(dir.file("c.h5"), slice, {1}, 4);
  for (const TensorInfo& t : slice.tensors()) {
    const std::vector<float> all = tensor_elements(paired.get(t.name), s.params.data());
    const int64_t first = t.expert_first * t.slice();
    EXPECT_TRUE(bits_equal(tensor_elements(t, h.params.data()),
                           std::vector<float>(all.begin() + first, all.begin() + first + t.numel)))
        << t.name;
  }
}

TEST(Checkpoint, MissingOptimizerAndBiasLoadAsZeros) {
  TempDir dir;
  ParamTable table = small_checkpoint_table();
  write_checkpoint(dir.file("c.h5"), table, random_state(table, {1}, 4));
  hid_t f = H5Fopen(dir.file("c.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(H5Ldelete(f, "optimizer", H5P_DEFAULT), 0);
  H5Fclose(f);
  CheckpointState r = read_checkpoint(dir.file("c.h5"), table, {1, 3}, 4);
  EXPECT_EQ(r.optimizer_step, 42);
  EXPECT_EQ(r.m, std::vector<float>(static_cast<size_t>(table.size()), 0.0f));
  EXPECT_EQ(r.v, r.m);
  EXPECT_EQ(r.bias.at(1), std::vector<float>(4, 0.0f));
}

TEST(Checkpoint, BadFilesGiveErrorsNamingPathAndTensor) {
  TempDir dir;
  ParamTable table = small_checkpoint_table();
  const std::string good = dir.file("c.h5");
  write_checkpoint(good, table, random_state(table, {1}, 4));
  auto read = [&](const std::string& path, const ParamTable& t) {
    return error_of([&] { read_checkpoint(path, t, {1}, 4); });
  };

  const std::string missing = dir.file("missing.h5");
  EXPECT_EQ(read(missing, table), missing + ": cannot open checkpoint (missing or not an HDF5 file)");
  EXPECT_EQ(error_of([&] { read_checkpoint_meta(missing); }),
            missing + ": cannot open checkpoint (missing or not an HDF5 file)");

  std::string bytes = read_file(good);
  const std::string half = dir.file("half.h5"), garbage = dir.file("garbage.h5");
  test::write_file(half, bytes.substr(0, bytes.size() / 2));
  test::write_file(garbage, std::string(4096, 'z'));
  std::string half_err = read(half, table);  // HDF5 1.10 refuses the open (EOF < EOA)
  EXPECT_EQ(half_err.rfind(half + ": ", 0), 0u) << half_err;
  EXPECT_EQ(read(garbage, table),
            garbage + ": cannot open checkpoint (missing or not an HDF5 file)");

  auto with_attr = [&](const std::string& name, auto write) {
    std::string path = dir.file(name);
    test::write_file(path, bytes);
    hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    write(f);
    H5Fclose(f);
    return path;
  };
  std::string other = with_attr("other.h5", [](hid_t f) { H5Adelete(f, "format"); });
  EXPECT_EQ(read(other, table), other + ": not a dsmoe checkpoint");
  std::string v2 = with_attr("v2.h5", [](hid_t f) {
    int two = 2;
    hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT, &two);
    H5Aclose(a);
  });
  EXPECT_EQ(read(v2, table), v2 + ": format_version 2 is not supported");
  EXPECT_EQ(error_of([&] { read_checkpoint_meta(v2); }), v2 + ": format_version 2 is not supported");

  ParamTable more = small_checkpoint_table();
  more.add("layers/1/attn/wq", {4, 4});
  EXPECT_EQ(read(good, more), good + ": checkpoint has no tensor params/layers/1/attn/wq");

  ParamTable wide;
  wide.add("tok_embedding", {64, 32});
  const std::string wide_path = dir.file("wide.h5");
  CheckpointState ws = random_state(wide, {}, 4);
  write_checkpoint(wide_path, wide, ws);
  ParamTable narrow;
  narrow.add("tok_embedding", {32, 32});
  EXPECT_EQ(error_of([&] { read_checkpoint(wide_path, narrow, {}, 4); }),
            wide_path + ": tensor params/tok_embedding has shape [64, 32], the config needs [32, 32]");
  EXPECT_EQ(read(good, small_checkpoint_table()), "(no error)");
}

TEST(Checkpoint, WriteReplacesAtomically) {
  TempDir dir;
  ParamTable table = small_checkpoint_table();
  const std::string path = dir.file("c.h5");
  CheckpointState s = random_state(table, {1}, 4);
  write_checkpoint(path, table, s);
  s.meta.step = 43;
  write_checkpoint(path, table, s);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_EQ(read_checkpoint_meta(path).step, 43);
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir.path))
    names.push_back(e.path().filename());
  EXPECT_EQ(names, std::vector<std::string>{"c.h5"});
}

TEST(Checkpoint, FailedWriteLeavesPreviousCheckpoint) {
  TempDir dir;
  ParamTable table = small_checkpoint_table();
  const std::string path = dir.file("c.h5");
  CheckpointState s = random_state(table, {1}, 4);
  write_checkpoint(path, table, s);
  const std::string before = read_file(path);
  s.meta.step = 99;
  if (geteuid() != 0) {  // root writes into read-only directories anyway
    ASSERT_EQ(chmod(dir.path.c_str(), 0555), 0);
    std::string err = error_of([&] { write_checkpoint(path, table, s); });
    chmod(dir.path.c_str(), 0755);
    EXPECT_EQ(err.rfind(path + ": cannot write checkpoint", 0), 0u) << err;
    EXPECT_EQ(read_file(path), before);
  }
  ASSERT_TRUE(std::filesystem::create_directory(path + ".tmp"));
  std::string err = error_of([&] { write_checkpoint(path, table, s); });
  EXPECT_EQ(err.rfind(path + ": cannot write checkpoint", 0), 0u) << err;
  EXPECT_EQ(read_file(path), before);

  std::filesystem::remove(path + ".tmp");
  s.params.pop_back();
  err = error_of([&] { write_checkpoint(path, table, s); });
  EXPECT_NE(err.find(path + ": cannot write checkpoint: params/m/v hold"), std::string::npos) << err;
  EXPECT_EQ(read_file(path), before);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

// A real ENOSPC: the temporary file is a link to /dev/full, whose writes the kernel refuses as
// a full disk's.
TEST(Checkpoint, FullDiskNamesTheFileAndLeavesPreviousCheckpoint) {
  std::error_code ec;
  if (!std::filesystem::is_character_file("/dev/full", ec)) GTEST_SKIP() << "no /dev/full";
  TempDir dir;
  ParamTable table = small_checkpoint_table();
  const std::string path = dir.file("c.h5");
  CheckpointState s = random_state(table, {1}, 4);
  write_checkpoint(path, table, s);
  const std::string before = read_file(path);
  std::filesystem::create_symlink("/dev/full", path + ".tmp");
  s.meta.step = 99;
  const std::string err = error_of([&] { write_checkpoint(path, table, s); });
  EXPECT_EQ(err.rfind(path + ": cannot write checkpoint: ", 0), 0u) << err;
  EXPECT_NE(err.find("No space left on device"), std::string::npos) << err;
  EXPECT_EQ(read_file(path), before);
  EXPECT_EQ(read_checkpoint_meta(path).step, 42);
  EXPECT_EQ(read(path, table), "(no error)");
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp") || std::filesystem::is_symlink(path + ".tmp"));
  write_checkpoint(path, table, s);  // with space again
  EXPECT_EQ(read_checkpoint_meta(path).step, 99);
}

// The same through the DSMOE_DISK_FULL hook (which cli_checkpoint_files_test uses on whole runs).
TEST(Checkpoint, DiskFullHookFailsTheWriteOfThatStep) {
  TempDir dir;
  ParamTable table = small_checkpoint_table();
  const std::string path = dir.file("checkpoint.h5");
  CheckpointState s = random_state(table, {1}, 4);
  ASSERT_EQ(setenv("DSMOE_DISK_FULL", "checkpoint.h5:43", 1), 0);
  write_checkpoint(path, table, s);  // step 42: before the hook's step
  s.meta.step = 43;
  const std::string err = error_of([&] { write_checkpoint(path, table, s); });
  unsetenv("DSMOE_DISK_FULL");
  EXPECT_EQ(err.rfind(path + ": cannot write checkpoint: ", 0), 0u) << err;
  EXPECT_NE(err.find("No space left on device"), std::string::npos) << err;
  EXPECT_EQ(read_checkpoint_meta(path).step, 42);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

// Before HDF5 parses a file: regular, with the signature; any superblock version.
TEST(Checkpoint, RefusedBeforeHdf5ParsesIt) {
  TempDir dir;
  ParamTable table = small_checkpoint_table();
  const std::string fifo = dir.file("fifo.h5"), v0 = dir.file("v0.h5"), folder = dir.file("dir.h5");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0644), 0);  // opening it for reading would block
  EXPECT_EQ(read(fifo, table), fifo + ": cannot open checkpoint (missing or not an HDF5 file)");
  std::filesystem::create_directory(folder);
  EXPECT_EQ(read(folder, table), folder + ": cannot open checkpoint (missing or not an HDF5 file)");
  hid_t f = H5Fcreate(v0.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);  // HDF5's default: superblock 0
  H5Fclose(f);
  EXPECT_EQ(read(v0, table), v0 + ": not a dsmoe checkpoint");  // read, and no format attribute
  const std::string good = dir.file("good.h5");
  write_checkpoint(good, table, random_state(table, {1}, 4));
  std::string bytes = read_file(good);
  ASSERT_GE(bytes.size(), 9u);
  EXPECT_GE(static_cast<unsigned char>(bytes[8]), 2);  // dsmoe writes checksummed metadata
  bytes[20] ^= 0x40;  // inside the superblock: its checksum no longer matches
  const std::string flipped = dir.file("flipped.h5");
  test::write_file(flipped, bytes);
  std::string err = read(flipped, table);
  EXPECT_EQ(err.rfind(flipped + ": ", 0), 0u) << err;
  EXPECT_NE(err, "(no error)");

  // The global heap (the strings' collection) has no checksum, and HDF5 1.10 loops forever on a
  // free-space object of size 0 in it: refused first.
  bytes = read_file(good);
  const size_t gcol = bytes.find("GCOL");
  ASSERT_NE(gcol, std::string::npos);
  size_t p = gcol + 16;  // the objects: 2-byte index, 2 refs, 4 reserved, 8-byte size, data
  auto u64 = [&](size_t at) {
    uint64_t v = 0;
    std::memcpy(&v, bytes.data() + at, 8);
    return v;
  };
  while (bytes[p] != 0 || bytes[p + 1] != 0) p += 16 + ((u64(p + 8) + 7) & ~uint64_t{7});
  std::string loop = bytes, past = bytes;
  std::memset(&loop[p + 8], 0, 8);              // the free space's size: 0
  past[gcol + 16 + 8 + 7] = static_cast<char>(0x7f);  // the first object's size: past the collection
  const std::string loop_path = dir.file("loop.h5"), past_path = dir.file("past.h5");
  test::write_file(loop_path, loop);
  test::write_file(past_path, past);
  EXPECT_EQ(read(loop_path, table), cat(loop_path, ": damaged checkpoint: the global heap (variable-length "
                                                   "strings) at byte ", gcol, " holds a free-space object of size 0"));
  err = read(past_path, table);
  EXPECT_EQ(err.rfind(cat(past_path, ": damaged checkpoint: the global heap"), 0), 0u) << err;
}

// Superblock version 0 (h5py's default; the seeds and regressions of the checkpoint fuzzer):
// the h5py copy of good.h5 at step 0 without the optional objects loads with its tensors, zero
// moments and last-step attributes 0; files whose damage crashes or hangs HDF5 1.10 when it
// parses them are refused, naming the file, and this process goes on.
TEST(Checkpoint, Version0FilesLoadAndDamagedOnesAreRefused) {
  const std::string fuzz = DSMOE_SOURCE_DIR "/tests/fuzz/";
  const std::string good = fuzz + "corpus/checkpoint/good.h5", step0 = fuzz + "corpus/checkpoint/h5py_step0.h5";
  const std::string crash = fuzz + "regressions/checkpoint/hdf5-v0-global-heap-index-crash.h5";
  const std::string hang = fuzz + "regressions/checkpoint/hdf5-v0-attribute-type-hang.h5";
  const ParamTable table = small_checkpoint_table();
  ASSERT_EQ(read_file(step0).at(8), 0);
  const CheckpointState want = read_checkpoint(good, table, {1}, 4);
  const CheckpointState s = read_checkpoint(step0, table, {1}, 4);
  EXPECT_TRUE(bits_equal(s.params, want.params));
  EXPECT_EQ(s.m, std::vector<float>(static_cast<size_t>(table.size()), 0.0f));
  EXPECT_EQ(s.v, s.m);
  EXPECT_EQ(s.optimizer_step, 0);
  EXPECT_EQ(s.bias.at(0), std::vector<float>(4, 0.0f));
  EXPECT_EQ(s.meta.config_yaml, want.meta.config_yaml);
  for (double last_step : {s.meta.loss, s.meta.aux_loss, s.meta.lr, s.meta.grad_norm}) EXPECT_EQ(last_step, 0.0);

  ASSERT_TRUE(std::filesystem::exists(crash) && std::filesystem::exists(hang));
  const std::string crashed = read(crash, table);
  EXPECT_EQ(crashed.rfind(crash + ": ", 0), 0u) << crashed;
  ASSERT_EQ(setenv("DSMOE_CHECKPOINT_PROBE_SECONDS", "0.5", 1), 0);
  const std::string hung = read(hang, table);
  ASSERT_EQ(setenv("DSMOE_CHECKPOINT_PROBE_SECONDS", "soon", 1), 0);
  const std::string bad_setting = read(step0, table);
  unsetenv("DSMOE_CHECKPOINT_PROBE_SECONDS");
  EXPECT_EQ(hung.rfind(hang + ": ", 0), 0u) << hung;
  EXPECT_EQ(bad_setting, step0 + ": DSMOE_CHECKPOINT_PROBE_SECONDS=soon is not a positive number of seconds");
}

// keep_checkpoint: checkpoint-<step>.h5 beside the checkpoint, the newest `keep` of them.
TEST(Checkpoint, KeepRotatesTheNewestN) {
  TempDir dir;
  ParamTable table = small_checkpoint_table();
  const std::string path = dir.file("checkpoint.h5");
  CheckpointState s = random_state(table, {1}, 4);
  test::write_file(dir.file("checkpoint-7.h5.tmp"), "leftover");  // not a kept checkpoint
  test::write_file(dir.file("checkpoint-x.h5"), "other");
  for (int64_t step : {2, 4, 6, 8, 10, 12}) {
    s.meta.step = step;
    write_checkpoint(path, table, s);
    keep_checkpoint(path, step, 3);
  }
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir.path)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"checkpoint-10.h5", "checkpoint-12.h5", "checkpoint-7.h5.tmp",
                                             "checkpoint-8.h5", "checkpoint-x.h5", "checkpoint.h5"}));
  for (int64_t step : {8, 10, 12}) {
    const std::string kept = dir.file("checkpoint-" + std::to_string(step) + ".h5");
    EXPECT_EQ(read_checkpoint_meta(kept).step, step);
    EXPECT_EQ(read(kept, table), "(no error)");
  }
  keep_checkpoint(path, 12, 1);  // the same checkpoint again: nothing left over
  EXPECT_FALSE(std::filesystem::exists(dir.file("checkpoint-12.h5.tmp")));
  EXPECT_FALSE(std::filesystem::exists(dir.file("checkpoint-10.h5")));
  s.meta.tokens_seen = 777;  // the same step again (a rerun): replaces the kept one
  write_checkpoint(path, table, s);
  keep_checkpoint(path, 12, 1);
  EXPECT_EQ(read_checkpoint_meta(dir.file("checkpoint-12.h5")).tokens_seen, 777);
}

}  // namespace
}  // namespace dsmoe
