#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dsmoe {

// 12345678 -> "12,345,678".
std::string fmt_count(int64_t n);

// {"a", "b"}, ", " -> "a, b".
std::string join(const std::vector<std::string>& parts, const std::string& separator);

}  // namespace dsmoe
