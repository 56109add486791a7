// The simulator's output: a text breakdown of one simulated step, a one-line row for sweep
// tables, and the HDF5 record (docs/simulation.md "Output").
#pragma once
#include <string>
#include <vector>

#include "sim/memory_fit.h"
#include "sim/simulate.h"

namespace dsmoe::sim {

std::vector<std::string> report_lines(const SimResult& r);
std::string table_header();
// The memory settings' table and the fastest that fits (or, when none does, the smallest peak).
std::vector<std::string> memory_fit_lines(const std::vector<MemorySetting>& settings, double gpu_memory_bytes);
std::string table_row(const std::string& label, const SimResult& r);

// Writes each result as group /<label>/ of one new HDF5 file; throws naming the path.
void write_results(const std::string& path, const std::vector<std::pair<std::string, SimResult>>& results);

}  // namespace dsmoe::sim
