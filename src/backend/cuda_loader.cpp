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

bool cuda_available(std::string* why) {
  auto count = symbol<DeviceCountFn>("dsmoe_cuda_device_count");
  if (!count) {
    if (why) *why = library().error;
    return false;
  }
  if (count() > 0) return true;
  if (why) *why = "no CUDA GPU is visible";
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

}  // namespace dsmoe
