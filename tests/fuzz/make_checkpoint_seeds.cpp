// Writes the seed corpus of the checkpoint fuzz target (tests/fuzz/corpus/checkpoint/): small
// checkpoints of fuzz_targets' seed table, good and subtly bad. Not part of the test run:
//   cmake --build BUILD --target fuzz_make_checkpoint_seeds && BUILD/tests/fuzz_make_checkpoint_seeds DIR
#include <hdf5.h>

#include <cstdio>
#include <filesystem>

#include "checkpoint_table.h"
#include "io/checkpoint.h"

using namespace dsmoe;

namespace {

CheckpointState state(const ParamTable& t) {
  CheckpointState s;
  for (int64_t i = 0; i < t.size(); ++i) {
    s.params.push_back(0.01f * static_cast<float>(i));
    s.m.push_back(0.001f * static_cast<float>(i));
    s.v.push_back(1e-6f * static_cast<float>(i));
  }
  s.optimizer_step = 3;
  s.moe_layers = {1};
  s.bias = {{0.5f, -0.5f, 0.25f, 0.0f}};
  s.meta.step = 3;
  s.meta.tokens_seen = 96;
  s.meta.config_yaml = "model: {d_model: 4, n_heads: 2, n_layers: 2}\nmoe: {n_routed: 4}\n";
  s.meta.loss = 5.5;
  s.meta.lr = 1e-3;
  return s;
}

// Opens a copy of `good` named `name` read-write and lets f change it.
template <typename F>
void variant(const std::string& dir, const std::string& good, const std::string& name, F f) {
  const std::string path = dir + "/" + name;
  std::filesystem::copy_file(good, path, std::filesystem::copy_options::overwrite_existing);
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  f(file);
  H5Fclose(file);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const ParamTable table = small_checkpoint_table();
  const std::string good = dir + "/good.h5";
  write_checkpoint(good, table, state(table));
  variant(dir, good, "no_optimizer.h5", [](hid_t f) { H5Ldelete(f, "optimizer", H5P_DEFAULT); });
  variant(dir, good, "no_tensor.h5", [](hid_t f) { H5Ldelete(f, "params/final_norm", H5P_DEFAULT); });
  variant(dir, good, "version2.h5", [](hid_t f) {
    int two = 2;
    hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT, &two);
    H5Aclose(a);
  });
  variant(dir, good, "int_config.h5", [](hid_t f) {
    H5Adelete(f, "config");
    hid_t space = H5Screate(H5S_SCALAR);
    int v = 7;
    hid_t a = H5Acreate2(f, "config", H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT, &v);
    H5Aclose(a);
    H5Sclose(space);
  });
  variant(dir, good, "wrong_shape.h5", [](hid_t f) {
    H5Ldelete(f, "params/final_norm", H5P_DEFAULT);
    hsize_t dims[2] = {2, 2};
    hid_t space = H5Screate_simple(2, dims, nullptr);
    hid_t d = H5Dcreate2(f, "params/final_norm", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT,
                         H5P_DEFAULT);
    H5Dclose(d);
    H5Sclose(space);
  });
  variant(dir, good, "bad_config.h5", [](hid_t f) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    const char* text = "model: {d_model: [1, 2]}\nfoo: bar\n";
    H5Adelete(f, "config");
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, "config", t, space, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, &text);
    H5Aclose(a);
    H5Sclose(space);
    H5Tclose(t);
  });
  return 0;
}
