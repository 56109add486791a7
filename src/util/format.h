#pragma once
#include <cstdint>
#include <string>

namespace dsmoe {

// 12345678 -> "  12,345,678" (right-aligned in `width` characters).
std::string fmt_count(int64_t n, int width = 14);

}  // namespace dsmoe
