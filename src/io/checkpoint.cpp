#include "io/checkpoint.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "io/disk_full.h"
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

// Writes each tensor straight from the buffer where it lies contiguous there; an interleaved
// pair's tensors go through one scratch vector (fresh gigabyte vectors cost page faults).
void write_tensors(hid_t file, const std::string& prefix, const ParamTable& table,
                   const std::vector<float>& buf) {
  std::vector<float> scratch;
  for (const TensorInfo& t : table.tensors()) {
    h5::Handle d = h5::create_dataset(file, prefix + t.name, H5T_IEEE_F32LE, global_shape(t));
    const float* elements = buf.data() + t.offset;
    if (!t.contiguous()) {
      scratch.resize(static_cast<size_t>(t.numel));
      copy_tensor_elements(t, buf.data(), scratch.data());
      elements = scratch.data();
    }
    h5::write_rows(d, H5T_NATIVE_FLOAT, t.expert_first, t.shape, elements);
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
  std::vector<float> scratch;  // as in write_tensors
  for (const TensorInfo& t : table.tensors()) {
    const std::string path = prefix + t.name;
    if (t.contiguous()) {
      read_checked(file, path, global_shape(t), t.expert_first, t.shape, buf.data() + t.offset);
      continue;
    }
    scratch.resize(static_cast<size_t>(t.numel));
    read_checked(file, path, global_shape(t), t.expert_first, t.shape, scratch.data());
    set_tensor_elements(t, scratch.data(), buf.data());
  }
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

uint64_t le64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

// A global heap collection ("GCOL", where HDF5 keeps variable-length strings) carries no
// checksum, and HDF5 1.10 parses it without bounds: a free-space object of size 0 makes it loop
// forever, an object larger than its collection makes it read past it. Walks the collection at
// `at` as HDF5 does and says what is wrong, or "" ("" too when it does not fit in the file:
// HDF5 refuses to read past the end of the file).
std::string global_heap_problem(const unsigned char* file, size_t size, size_t at) {
  constexpr uint64_t kHeader = 16, kObjHeader = 16;  // with 8-byte lengths, as dsmoe writes
  if (size - at < kHeader || file[at + 4] != 1) return "";
  const uint64_t coll = le64(file + at + 8);
  if (coll < kHeader || coll > size - at) return "";
  const unsigned char* c = file + at;
  for (uint64_t p = kHeader; p < coll;) {
    if (coll - p < kObjHeader) break;  // too small for an object: free space to the end
    const unsigned idx = c[p] | c[p + 1] << 8;
    const uint64_t obj = le64(c + p + 8);
    if (obj > coll) return cat("an object of ", obj, " bytes in a collection of ", coll);
    const uint64_t need = idx > 0 ? kObjHeader + ((obj + 7) & ~uint64_t{7}) : obj;
    if (need == 0) return "a free-space object of size 0";
    if (need > coll - p) return cat("object ", idx, " ends past the collection");
    p += need;
  }
  return "";
}

// Before HDF5 parses anything: a regular file (not a FIFO that would block) with the HDF5
// signature at offset 0 and a superblock of version 2 or later, as dsmoe writes them (library
// version bounds 1.8 and up). From version 2 on, HDF5 verifies the checksums of the superblock
// and of every object header before it parses them, so damaged metadata is refused instead of
// being parsed (HDF5's parsers of version 0/1 metadata are not hardened against garbage). The
// global heap, which has no checksum, is walked here first (global_heap_problem). Reads the
// whole file once (mapped); loading a checkpoint reads all of it anyway.
void check_before_hdf5(const std::string& path) {
  std::error_code ec;
  DSMOE_CHECK(std::filesystem::is_regular_file(path, ec),
              "cannot open checkpoint (missing or not an HDF5 file)");
  const int fd = ::open(path.c_str(), O_RDONLY);
  DSMOE_CHECK(fd >= 0, "cannot open checkpoint (missing or not an HDF5 file)");
  struct stat st {};
  const bool stat_ok = ::fstat(fd, &st) == 0;
  const size_t size = stat_ok ? static_cast<size_t>(st.st_size) : 0;
  void* map = size >= 9 ? ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
  ::close(fd);
  DSMOE_CHECK(stat_ok && (size < 9 || map != MAP_FAILED), "cannot read checkpoint: ", std::strerror(errno));
  struct Unmap {
    void* p;
    size_t n;
    ~Unmap() {
      if (p != MAP_FAILED) ::munmap(p, n);
    }
  } unmap{map, size};
  const auto* bytes = static_cast<const unsigned char*>(map);
  DSMOE_CHECK(size >= 9 && std::memcmp(bytes, "\x89HDF\r\n\x1a\n", 8) == 0,
              "cannot open checkpoint (missing or not an HDF5 file)");
  const int version = bytes[8];
  DSMOE_CHECK(version >= 2, "not a dsmoe checkpoint (HDF5 superblock version ", version,
              "; dsmoe writes version 2 or later, whose metadata carries checksums)");
  for (const unsigned char* p = bytes; (p = static_cast<const unsigned char*>(
                                            memmem(p, size - (p - bytes), "GCOL", 4))) != nullptr;
       ++p) {
    const size_t at = static_cast<size_t>(p - bytes);
    const std::string problem = global_heap_problem(bytes, size, at);
    DSMOE_CHECK(problem.empty(), "damaged checkpoint: the global heap (variable-length strings) at byte ",
                at, " holds ", problem);
  }
}

// Opens `path` and checks that it is a checkpoint of a supported version.
h5::Handle open_checkpoint(const std::string& path) {
  h5::silence_errors();
  check_before_hdf5(path);
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

// `path` is the checkpoint's real name (for the DSMOE_DISK_FULL hook); the file written is `tmp`.
void write_file(const std::string& path, const std::string& tmp, const ParamTable& table,
                const CheckpointState& s) {
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
  if (h5::disk_full_requested(path, s.meta.step)) h5::fill_disk(file, tmp);  // test hook
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
  DSMOE_CHECK(file.close() >= 0, "cannot finish ", tmp, h5::why());
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
    write_file(path, tmp, table, state);
    fsync_path(tmp, O_RDONLY);
    DSMOE_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename ", tmp, ": ",
                std::strerror(errno));
    fsync_path(parent_dir(path), O_RDONLY | O_DIRECTORY);  // makes the rename durable
  } catch (const Error& e) {
    ::unlink(tmp.c_str());  // fails harmlessly when tmp is not a file we made
    throw Error(cat(path, ": cannot write checkpoint: ", e.what()));
  }
}

void keep_checkpoint(const std::string& path, int64_t step, int keep) {
  namespace fs = std::filesystem;
  DSMOE_ASSERT(keep > 0 && step >= 0);
  const fs::path real(path);
  const fs::path dir = real.has_parent_path() ? real.parent_path() : fs::path(".");
  const std::string stem = real.stem().string() + "-", ext = real.extension().string();
  const std::string kept = (dir / cat(stem, step, ext)).string(), tmp = kept + ".tmp";
  std::error_code ec;
  fs::remove(tmp, ec);
  fs::create_hard_link(real, tmp, ec);
  if (ec) {  // a file system without hard links
    fs::copy_file(real, tmp, fs::copy_options::overwrite_existing, ec);
    try {
      DSMOE_CHECK(!ec, "cannot copy ", path, " to ", tmp, ": ", ec.message());
      fsync_path(tmp, O_RDONLY);
    } catch (const Error& e) {
      fs::remove(tmp, ec);
      throw Error(cat(kept, ": cannot keep the checkpoint: ", e.what()));
    }
  }
  fs::rename(tmp, kept, ec);
  if (ec) {
    const std::string why = ec.message();
    fs::remove(tmp, ec);
    throw Error(cat(kept, ": cannot keep the checkpoint: cannot rename ", tmp, ": ", why));
  }
  fs::remove(tmp, ec);  // still there when `kept` already was this file (rename does nothing then)
  // The kept ones: <stem><digits><ext>, newest first.
  std::vector<std::pair<int64_t, fs::path>> all;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= stem.size() + ext.size() || name.compare(0, stem.size(), stem) != 0 ||
        name.compare(name.size() - ext.size(), ext.size(), ext) != 0)
      continue;
    const std::string digits = name.substr(stem.size(), name.size() - stem.size() - ext.size());
    if (digits.size() > 18 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    all.emplace_back(std::stoll(digits), it->path());
  }
  DSMOE_CHECK(!ec, dir.string(), ": cannot list the kept checkpoints: ", ec.message());
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = static_cast<size_t>(keep); i < all.size(); ++i) {
    fs::remove(all[i].second, ec);
    DSMOE_CHECK(!ec, all[i].second.string(), ": cannot remove an old checkpoint (train.keep_checkpoints ",
                keep, "): ", ec.message());
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
