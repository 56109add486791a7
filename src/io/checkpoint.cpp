#include "io/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "io/h5.h"
#include "util/check.h"

namespace dsmoe {
namespace {

constexpr const char* kFormat = "dsmoe-checkpoint";
constexpr int kFormatVersion = 1;

std::string bias_path(int layer) { return cat("state/layers/", layer, "/moe/bias"); }

std::vector<int64_t> global_shape(const TensorInfo& t) {
  std::vector<int64_t> dims = t.shape;
  dims.at(0) = t.global_dim0;
  return dims;
}

void write_tensors(hid_t file, const std::string& prefix, const ParamTable& table,
                   const std::vector<float>& buf) {
  for (const TensorInfo& t : table.tensors()) {
    h5::Handle d = h5::create_dataset(file, prefix + t.name, H5T_IEEE_F32LE, global_shape(t));
    h5::write_rows(d, H5T_NATIVE_FLOAT, t.expert_first, t.shape, buf.data() + t.offset);
  }
}

// Reads this rank's rows of the dataset at `path` after checking its global shape.
void read_checked(hid_t file, const std::string& path, const std::vector<int64_t>& want,
                  int64_t row0, const std::vector<int64_t>& block, float* dst) {
  DSMOE_CHECK(h5::exists(file, path), "checkpoint has no tensor ", path);
  h5::Handle d = h5::open_dataset(file, path);
  std::vector<int64_t> have = h5::shape(d);
  DSMOE_CHECK(have == want, "tensor ", path, " has shape ", h5::shape_str(have),
              ", the config needs ", h5::shape_str(want));
  try {
    h5::read_rows(d, H5T_NATIVE_FLOAT, row0, block, dst);
  } catch (const Error& e) {
    throw Error(cat("cannot read tensor ", path, ": ", e.what()));
  }
}

void read_tensors(hid_t file, const std::string& prefix, const ParamTable& table,
                  std::vector<float>& buf) {
  buf.assign(static_cast<size_t>(table.size()), 0.0f);
  for (const TensorInfo& t : table.tensors())
    read_checked(file, prefix + t.name, global_shape(t), t.expert_first, t.shape,
                 buf.data() + t.offset);
}

// Runs f(), prefixing the message of any Error it throws with the file's path.
template <typename F>
auto naming(const std::string& path, F&& f) {
  try {
    return f();
  } catch (const Error& e) {
    throw Error(cat(path, ": ", e.what()));
  }
}

// Opens `path` and checks that it is a checkpoint of a supported version.
h5::Handle open_checkpoint(const std::string& path) {
  h5::silence_errors();
  h5::Handle file = h5::open_file(path, H5F_ACC_RDONLY);
  DSMOE_CHECK(file.valid(), "cannot open checkpoint (missing or not an HDF5 file)");
  bool ours = false;
  try {
    ours = h5::read_attr_string(file, "format") == kFormat;
  } catch (const Error&) {
  }
  DSMOE_CHECK(ours && h5::has_attr(file, "format_version"), "not a dsmoe checkpoint");
  int64_t version = h5::read_attr_int64(file, "format_version");
  DSMOE_CHECK(version == kFormatVersion, "format_version ", version, " is not supported");
  return file;
}

CheckpointMeta read_meta(hid_t file) {
  CheckpointMeta m;
  m.step = h5::read_attr_int64(file, "step");
  m.tokens_seen = h5::read_attr_int64(file, "tokens_seen");
  m.config_yaml = h5::read_attr_string(file, "config");
  m.loss = h5::read_attr_double(file, "loss");
  m.aux_loss = h5::read_attr_double(file, "aux_loss");
  m.lr = h5::read_attr_double(file, "lr");
  m.grad_norm = h5::read_attr_double(file, "grad_norm");
  return m;
}

void write_file(const std::string& tmp, const ParamTable& table, const CheckpointState& s) {
  const size_t n = static_cast<size_t>(table.size());
  DSMOE_CHECK(s.params.size() == n && s.m.size() == n && s.v.size() == n,
              "params/m/v hold ", s.params.size(), "/", s.m.size(), "/", s.v.size(),
              " values, the table has ", n);
  DSMOE_CHECK(s.bias.size() == s.moe_layers.size(), s.bias.size(), " bias vectors for ",
              s.moe_layers.size(), " MoE layers");
  // Attributes of a long config exceed the 64 KiB of compact storage; the 1.8 format stores
  // them densely.
  h5::Handle fapl = h5::file_access(H5F_LIBVER_V18, H5F_LIBVER_LATEST);
  h5::Handle file = h5::create_file(tmp, fapl);
  h5::write_attr(file, "format", kFormat);
  h5::write_attr_int(file, "format_version", kFormatVersion);
  h5::write_attr_int64(file, "step", s.meta.step);
  h5::write_attr_int64(file, "tokens_seen", s.meta.tokens_seen);
  h5::write_attr(file, "config", s.meta.config_yaml);
  h5::write_attr_double(file, "loss", s.meta.loss);
  h5::write_attr_double(file, "aux_loss", s.meta.aux_loss);
  h5::write_attr_double(file, "lr", s.meta.lr);
  h5::write_attr_double(file, "grad_norm", s.meta.grad_norm);
  write_tensors(file, "params/", table, s.params);
  for (size_t i = 0; i < s.bias.size(); ++i) {
    const std::vector<float>& b = s.bias[i];
    std::vector<int64_t> dims{static_cast<int64_t>(b.size())};
    h5::Handle d = h5::create_dataset(file, bias_path(s.moe_layers[i]), H5T_IEEE_F32LE, dims);
    h5::write_rows(d, H5T_NATIVE_FLOAT, 0, dims, b.data());
  }
  h5::write_attr_int64(h5::create_group(file, "optimizer"), "step", s.optimizer_step);
  write_tensors(file, "optimizer/m/", table, s.m);
  write_tensors(file, "optimizer/v/", table, s.v);
  DSMOE_CHECK(file.close() >= 0, "cannot close ", tmp);
}

void fsync_path(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags);
  DSMOE_CHECK(fd >= 0, "cannot open ", path, ": ", std::strerror(errno));
  int rc = ::fsync(fd);
  ::close(fd);
  DSMOE_CHECK(rc == 0, "cannot sync ", path, ": ", std::strerror(errno));
}

std::string parent_dir(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

void write_checkpoint(const std::string& path, const ParamTable& table,
                      const CheckpointState& state) {
  h5::silence_errors();
  const std::string tmp = path + ".tmp";
  try {
    write_file(tmp, table, state);
    fsync_path(tmp, O_RDONLY);
    DSMOE_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename ", tmp, ": ",
                std::strerror(errno));
    fsync_path(parent_dir(path), O_RDONLY | O_DIRECTORY);  // makes the rename durable
  } catch (const Error& e) {
    ::unlink(tmp.c_str());  // fails harmlessly when tmp is not a file we made
    throw Error(cat(path, ": cannot write checkpoint: ", e.what()));
  }
}

CheckpointState read_checkpoint(const std::string& path, const ParamTable& table,
                                const std::vector<int>& moe_layers, int n_routed) {
  return naming(path, [&] {
    h5::Handle file = open_checkpoint(path);
    CheckpointState s;
    s.meta = read_meta(file);
    read_tensors(file, "params/", table, s.params);
    if (h5::exists(file, "optimizer")) {
      s.optimizer_step = h5::read_attr_int64(h5::open_group(file, "optimizer"), "step");
      read_tensors(file, "optimizer/m/", table, s.m);
      read_tensors(file, "optimizer/v/", table, s.v);
    } else {
      s.optimizer_step = s.meta.step;
      s.m.assign(static_cast<size_t>(table.size()), 0.0f);
      s.v = s.m;
    }
    s.moe_layers = moe_layers;
    std::vector<int64_t> dims{n_routed};
    for (int l : moe_layers) {
      std::vector<float>& b = s.bias.emplace_back(static_cast<size_t>(n_routed), 0.0f);
      if (h5::exists(file, bias_path(l))) read_checked(file, bias_path(l), dims, 0, dims, b.data());
    }
    return s;
  });
}

CheckpointMeta read_checkpoint_meta(const std::string& path) {
  return naming(path, [&] { return read_meta(open_checkpoint(path)); });
}

}  // namespace dsmoe
