// What a run records of where and how it ran (docs/metrics.md, Provenance): the host, the
// device, the command line and the time.
#pragma once
#include <string>

namespace dsmoe {

std::string host_name();

// The device in words: the GPU model from /proc/driver/nvidia for "cuda" (the first GPU's), the
// CPU model from /proc/cpuinfo otherwise.
std::string device_description(const std::string& backend);

// This process's command line, its arguments joined by spaces (those with a space quoted).
std::string command_line();

// Now, UTC, as 2026-12-07T21:30:00Z.
std::string utc_now();

}  // namespace dsmoe
