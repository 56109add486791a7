// The full-disk test hook (util/test_hooks.h, DSMOE_DISK_FULL=NAME:STEP): the writes of the file
// named NAME (checkpoint.h5 or metrics.h5, the last component of its path) fail from the write
// after step STEP on, as they would on a full disk: the file's descriptor is pointed at
// /dev/full, so HDF5's own writes get ENOSPC from the kernel.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <string>

namespace dsmoe::h5 {

// Whether the hook asks for the write of `path` after step `step` to fail.
bool disk_full_requested(const std::string& path, int64_t step);
// From now on every write of HDF5 to `file` fails with ENOSPC (reads give zeros).
void fill_disk(hid_t file, const std::string& path);

}  // namespace dsmoe::h5
