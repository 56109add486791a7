// Fuzz target: the checkpoint reader (src/io/checkpoint*). The bytes are written to a file,
// which read_checkpoint_meta and read_checkpoint (for the small model of the seed corpus:
// tests/fuzz/corpus/checkpoint/) load, or refuse with an error naming the file. A stored config
// that loads is parsed as `dsmoe eval` does.
//
// What this reaches: the reader checks the HDF5 signature and walks the global heap collections
// (where the variable-length strings live; no checksum) as HDF5 would, then probes the file in a
// child process (this fuzzer started again) before it reads it (docs/model.md, Checkpoint), so an
// input that crashes or hangs HDF5 is refused with an error naming the file, as in dsmoe. HDF5 verifies the checksums
// of superblock 2+ metadata, so mutations of those stop there; the h5py seeds (superblock 0,
// h5py_*.h5) have none, and their mutations reach HDF5's old-format parsers (object headers,
// v1 B-trees, local and global heaps). The probe's timeout is 2 s here (below libFuzzer's
// -timeout of scripts/sanitize.sh), unless DSMOE_CHECKPOINT_PROBE_SECONDS says otherwise.
//
// Found so far (tests/fuzz/regressions/checkpoint/): HDF5 1.10 loops forever on a global heap
// with a free-space object of size 0 (refused before HDF5 opens the file), leaks memory when it
// refuses a damaged object header (an HDF5 bug, suppressed in scripts/lsan.supp), and, in
// superblock 0 files, crashes on an out-of-range global heap index and does not finish reading
// an attribute whose datatype is damaged (both refused by the probe).
#include <cstdlib>

#include "checkpoint_table.h"
#include "config/config.h"
#include "fuzz_targets.h"
#include "io/checkpoint.h"

namespace dsmoe::fuzz {

void checkpoint_one(const uint8_t* data, size_t size) {
  setenv("DSMOE_CHECKPOINT_PROBE_SECONDS", "2", 0);
  TempInput in(data, size, ".h5");
  CheckpointMeta meta;
  if (!loads(in.path, [&] { meta = read_checkpoint_meta(in.path); })) return;
  const ParamTable table = small_checkpoint_table();
  CheckpointState s;
  if (loads(in.path, [&] { s = read_checkpoint(in.path, table, {1}, 4); })) {
    const size_t n = static_cast<size_t>(table.size());
    if (s.params.size() != n || s.m.size() != n || s.v.size() != n || s.bias.size() != 1 ||
        s.bias[0].size() != 4)
      finding("a checkpoint loaded with the wrong sizes");
  }
  const std::string stored = in.path + " (stored config)";
  loads(stored, [&] { parse_config(meta.config_yaml, stored); });
}

}  // namespace dsmoe::fuzz

#ifdef DSMOE_LIBFUZZER
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dsmoe::fuzz::checkpoint_one(data, size);
  return 0;
}
#endif
