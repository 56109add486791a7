#include "io/disk_full.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "util/check.h"

namespace dsmoe::h5 {

bool disk_full_requested(const std::string& path, int64_t step) {
  const char* hook = std::getenv("DSMOE_DISK_FULL");
  if (!hook || !*hook) return false;
  const std::string spec(hook);
  const size_t colon = spec.rfind(':');
  char* end = nullptr;
  const long long at = colon == std::string::npos ? 0 : std::strtoll(spec.c_str() + colon + 1, &end, 10);
  DSMOE_CHECK(colon != std::string::npos && colon > 0 && end && *end == '\0' && end != spec.c_str() + colon + 1,
              "DSMOE_DISK_FULL: expected FILE:STEP, got '", spec, "'");
  const std::string name = spec.substr(0, colon);
  const size_t slash = path.rfind('/');
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  return base == name && step >= at;
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
