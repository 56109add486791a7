#include "backend/cuda_loader.h"

#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <string>
#include <vector>

#include "util/check.h"

namespace dsmoe {
namespace {

using DeviceCountFn = int (*)();
using MakeFn = Backend<float>* (*)(int, int, char*, int);
using MakeCommFn = Comm* (*)(Comm*, Comm*, char*, int);

struct Library {
  void* handle = nullptr;
  std::string error;
};

std::string exe_dir() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string path(buf, n);
  return path.substr(0, path.rfind('/'));
}

// $DSMOE_CUDA_LIB, else beside the executable, else one folder up (test binaries).
const Library& library() {
  static const Library lib = [] {
    Library l;
    std::string tried;
    const char* env = std::getenv("DSMOE_CUDA_LIB");
    const std::vector<std::string> paths =
        env ? std::vector<std::string>{env}
            : std::vector<std::string>{exe_dir() + "/libdsmoe_cuda.so", exe_dir() + "/../libdsmoe_cuda.so"};
    for (const std::string& path : paths) {
      if ((l.handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL))) return l;
      tried += std::string(tried.empty() ? "" : "; ") + dlerror();
    }
    l.error = "the CUDA backend library is not available (" + tried + ")";
    return l;
  }();
  return lib;
}

template <typename Fn>
Fn symbol(const char* name) {
  const Library& l = library();
  return l.handle ? reinterpret_cast<Fn>(dlsym(l.handle, name)) : nullptr;
}

}  // namespace

int cuda_device_count() {
  auto count = symbol<DeviceCountFn>("dsmoe_cuda_device_count");
  return count ? count() : 0;
}

bool cuda_available(std::string* why) {
  if (cuda_device_count() > 0) return true;
  if (why) *why = symbol<DeviceCountFn>("dsmoe_cuda_device_count") ? "no CUDA GPU is visible" : library().error;
  return false;
}

std::unique_ptr<Backend<float>> make_cuda_backend(int device, bool bf16) {
  std::string why;
  DSMOE_CHECK(cuda_available(&why), "backend cuda: ", why);
  char error[512] = "";
  Backend<float>* be = symbol<MakeFn>("dsmoe_make_cuda_backend")(device, bf16 ? 1 : 0, error, sizeof error);
  DSMOE_CHECK(be != nullptr, "backend cuda: ", error);
  return std::unique_ptr<Backend<float>>(be);
}

namespace {

// `owned` (null or &host) passes to the communicator, which frees it even when it fails.
std::unique_ptr<Comm> nccl_over(Comm& host, Comm* owned) {
  std::string why;
  if (!cuda_available(&why)) {
    delete owned;
    throw Error("NCCL: " + why);
  }
  char error[512] = "";
  Comm* comm = symbol<MakeCommFn>("dsmoe_make_nccl_comm")(&host, owned, error, sizeof error);
  DSMOE_CHECK(comm != nullptr, "NCCL: ", error);
  return std::unique_ptr<Comm>(comm);
}

}  // namespace

std::unique_ptr<Comm> make_nccl_comm(Comm& host) { return nccl_over(host, nullptr); }

std::unique_ptr<Comm> make_nccl_comm(std::unique_ptr<Comm> host) {
  Comm& ref = *host;
  return nccl_over(ref, host.release());
}

}  // namespace dsmoe
