#pragma once
#include <cstdint>
#include <string>

namespace dsmoe {

// 12345678 -> "12,345,678".
std::string fmt_count(int64_t n);

}  // namespace dsmoe
