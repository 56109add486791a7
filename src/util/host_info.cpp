#include "util/host_info.h"

#include <glob.h>
#include <unistd.h>

#include <ctime>
#include <fstream>

namespace dsmoe {
namespace {

// The value of the first "key: value" line of a /proc file that starts with `key`.
std::string first_line_with(const std::string& file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) {
      std::string v = line.substr(line.find(':') + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      return v;
    }
  return "";
}

}  // namespace

std::string host_name() {
  char name[256] = {};
  gethostname(name, sizeof name - 1);
  return name;
}

std::string device_description(const std::string& backend) {
  if (backend == "cuda") {
    glob_t g;
    std::string name;
    if (glob("/proc/driver/nvidia/gpus/*/information", 0, nullptr, &g) == 0 && g.gl_pathc > 0)
      name = first_line_with(g.gl_pathv[0], "Model");
    globfree(&g);
    return name.empty() ? "GPU (model unknown)" : name;
  }
  const std::string cpu = first_line_with("/proc/cpuinfo", "model name");
  return cpu.empty() ? "CPU (model unknown)" : cpu;
}

std::string command_line() {
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  std::string out;
  for (std::string arg; std::getline(f, arg, '\0');)
    out += (out.empty() ? "" : " ") + (arg.find(' ') == std::string::npos ? arg : "'" + arg + "'");
  return out;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace dsmoe
