#include "io/disk_full.h"

#include <fcntl.h>
#include <unistd.h>


#include "util/check.h"
#include "util/test_hooks.h"

namespace dsmoe::h5 {

bool disk_full_requested(const std::string& path, int64_t step) {
  const std::optional<test_hooks::DiskFull> hook = test_hooks::disk_full();
  if (!hook) return false;
  const size_t slash = path.rfind('/');
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  return base == hook->file && step >= hook->step;
}

void fill_disk(hid_t file, const std::string& path) {
  void* handle = nullptr;
  DSMOE_CHECK(H5Fget_vfd_handle(file, H5P_DEFAULT, &handle) >= 0 && handle, path,
              ": DSMOE_DISK_FULL: cannot get the file descriptor");
  const int full = ::open("/dev/full", O_RDWR);
  DSMOE_CHECK(full >= 0, path, ": DSMOE_DISK_FULL needs /dev/full");
  const int rc = ::dup2(full, *static_cast<int*>(handle));
  ::close(full);
  DSMOE_CHECK(rc >= 0, path, ": DSMOE_DISK_FULL: dup2 failed");
}

}  // namespace dsmoe::h5
