#include "io/checkpoint.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>

#include "io/disk_full.h"
#include "io/h5.h"
#include "util/check.h"
#include "util/isolated.h"

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

// Reads this rank's rows of the dataset at `path` into dst after checking its global shape.
// A probe (dst null) reads them only where HDF5 has more to parse than a byte range
// (h5::plain_float32), and throws them away.
void read_checked(hid_t file, const std::string& path, const std::vector<int64_t>& want,
                  int64_t row0, const std::vector<int64_t>& block, float* dst) {
  DSMOE_CHECK(h5::exists(file, path), "checkpoint has no tensor ", path);
  h5::Handle d = h5::open_dataset(file, path);
  std::vector<int64_t> have = h5::shape(d);
  DSMOE_CHECK(have == want, "tensor ", path, " has shape ", h5::shape_str(have),
              ", the config needs ", h5::shape_str(want));
  std::vector<float> discarded;
  if (!dst) {
    if (h5::plain_float32(d)) return;
    discarded.resize(static_cast<size_t>(
        std::accumulate(block.begin(), block.end(), int64_t{1}, std::multiplies<>())));
    dst = discarded.data();
  }
  try {
    h5::read_rows(d, H5T_NATIVE_FLOAT, row0, block, dst);
  } catch (const Error& e) {
    throw Error(cat("cannot read tensor ", path, ": ", e.what()));
  }
}

// Reads the tensors of `table` under `prefix` into *buf, or probes them (buf null: read_checked).
void read_tensors(hid_t file, const std::string& prefix, const ParamTable& table,
                  std::vector<float>* buf) {
  if (buf) buf->assign(static_cast<size_t>(table.size()), 0.0f);
  std::vector<float> scratch;  // as in write_tensors
  for (const TensorInfo& t : table.tensors()) {
    float* dst = nullptr;
    if (buf && t.contiguous()) {
      dst = buf->data() + t.offset;
    } else if (buf) {
      scratch.resize(static_cast<size_t>(t.numel));
      dst = scratch.data();
    }
    read_checked(file, prefix + t.name, global_shape(t), t.expert_first, t.shape, dst);
    if (buf && !t.contiguous()) set_tensor_elements(t, scratch.data(), buf->data());
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

// The size of lengths in the superblock (superblock 0 and 1 keep it 6 bytes after their version,
// 2 and 3 right after it), 0 when the file is too short to tell.
unsigned lengths_size(const unsigned char* file, size_t size) {
  const size_t at = file[8] < 2 ? 14 : 10;
  return at < size ? file[at] : 0;
}

// Before HDF5 parses anything: a regular file (not a FIFO that would block) with the HDF5
// signature at offset 0, and global heap collections (no checksum in any version of the
// format) that HDF5 can walk: the one damage known to make HDF5 1.10 loop forever is refused
// here at once rather than by the probe's timeout (load). Walked where lengths are 8 bytes, as
// dsmoe and h5py write them. Reads the whole file once (mapped); loading a checkpoint reads all
// of it anyway.
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
  if (lengths_size(bytes, size) != 8) return;
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

// An optional attribute of the last step taken; 0 where the file has none (written before
// any step).
double last_step_attr(hid_t file, const std::string& name) {
  return h5::has_attr(file, name) ? h5::read_attr_double(file, name) : 0.0;
}

CheckpointMeta read_meta(hid_t file) {
  CheckpointMeta m;
  m.step = h5::read_attr_int64(file, "step");
  m.tokens_seen = h5::read_attr_int64(file, "tokens_seen");
  m.config_yaml = h5::read_attr_string(file, "config");
  m.loss = last_step_attr(file, "loss");
  m.aux_loss = last_step_attr(file, "aux_loss");
  m.lr = last_step_attr(file, "lr");
  m.grad_norm = last_step_attr(file, "grad_norm");
  return m;
}

// The checkpoint in `file`, or, probing, everything HDF5 parses for it with the tensors' values
// left empty (read_tensors).
CheckpointState read_state(hid_t file, const ParamTable& table, const std::vector<int>& moe_layers,
                           int n_routed, bool probe) {
  auto values = [probe](std::vector<float>& v) { return probe ? nullptr : &v; };
  CheckpointState s;
  s.meta = read_meta(file);
  read_tensors(file, "params/", table, values(s.params));
  if (h5::exists(file, "optimizer")) {
    s.optimizer_step = h5::read_attr_int64(h5::open_group(file, "optimizer"), "step");
    read_tensors(file, "optimizer/m/", table, values(s.m));
    read_tensors(file, "optimizer/v/", table, values(s.v));
  } else if (!probe) {
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
}

constexpr const char* kProbeTask = "checkpoint-probe";  // util/isolated.h

// One tensor as probe_args give it: "<name> <expert_first> <global_dim0> <dims...>".
std::string tensor_arg(const TensorInfo& t) {
  std::string arg = cat(t.name, " ", t.expert_first, " ", t.global_dim0);
  for (int64_t d : t.shape) arg += cat(" ", d);
  return arg;
}

// {path, n_routed, the MoE layers ("1,3"), one tensor_arg per tensor of `table`}.
std::vector<std::string> probe_args(const std::string& path, const ParamTable& table,
                                    const std::vector<int>& moe_layers, int n_routed) {
  std::string layers;
  for (int l : moe_layers) layers += cat(layers.empty() ? "" : ",", l);
  std::vector<std::string> args{path, std::to_string(n_routed), layers};
  for (const TensorInfo& t : table.tensors()) args.push_back(tensor_arg(t));
  return args;
}

// The table of probe_args' tensors, each a slice of rows of its dataset (what a probe reads of
// it; how the tensors lie in a buffer does not matter there).
ParamTable probe_table(std::vector<std::string>::const_iterator first,
                       std::vector<std::string>::const_iterator last) {
  ParamTable table;
  for (; first != last; ++first) {
    std::istringstream in(*first);
    std::string name;
    int64_t expert_first = 0, global_dim0 = 0;
    std::vector<int64_t> shape;
    in >> name >> expert_first >> global_dim0;
    for (int64_t d; in >> d;) shape.push_back(d);
    table.add(name, shape, true, expert_first, global_dim0);
  }
  return table;
}

// The probe, in a child process: what read_checkpoint_meta (args = {path}) or read_checkpoint
// (args = probe_args) make HDF5 parse, without the plain tensors' bytes (read_state probing).
void probe(const std::vector<std::string>& args) {
  h5::silence_errors();
  h5::Handle file = open_checkpoint(args.at(0));
  if (args.size() == 1) {
    read_meta(file);
    return;
  }
  std::vector<int> moe_layers;
  std::istringstream layers(args.at(2));
  for (std::string l; std::getline(layers, l, ',');) moe_layers.push_back(std::stoi(l));
  read_state(file, probe_table(args.begin() + 3, args.end()), moe_layers, std::stoi(args.at(1)), true);
}

// This program started as a probe's child runs the probe here, before main, and exits.
[[maybe_unused]] const bool kProbeChild = serve_isolated(kProbeTask, probe);

// How long the probe may take (DSMOE_CHECKPOINT_PROBE_SECONDS, default 60): it parses the
// metadata only, milliseconds for a checkpoint on a working file system.
double probe_seconds() {
  const char* env = std::getenv("DSMOE_CHECKPOINT_PROBE_SECONDS");
  if (!env) return 60;
  char* end = nullptr;
  const double s = std::strtod(env, &end);
  DSMOE_CHECK(end != env && *end == '\0' && s > 0, "DSMOE_CHECKPOINT_PROBE_SECONDS=", env,
              " is not a positive number of seconds");
  return s;
}

// read() of `path`, after checking the file before HDF5 parses it (check_before_hdf5) and probing
// what read() reads in a child process (probe_request: the probe's args). HDF5's parsers of
// metadata without checksums (superblock 0 and 1, what h5py writes by default; the global heap of
// any version) crash or loop on some damaged files: that must end in an error here, not take this
// process down. Errors name the file.
template <typename F>
auto load(const std::string& path, const std::vector<std::string>& probe_request, F read) {
  return naming(path, [&] {
    check_before_hdf5(path);
    run_isolated("damaged checkpoint: reading it", probe_seconds(), kProbeTask, probe_request);
    h5::silence_errors();
    return read();
  });
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
  return load(path, probe_args(path, table, moe_layers, n_routed), [&] {
    return read_state(open_checkpoint(path), table, moe_layers, n_routed, false);
  });
}

CheckpointMeta read_checkpoint_meta(const std::string& path) {
  return load(path, {path}, [&] { return read_meta(open_checkpoint(path)); });
}

}  // namespace dsmoe
