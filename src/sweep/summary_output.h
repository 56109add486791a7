// The ranked variant table of `dsmoe analyze` as text, CSV, and summary.h5 (which also holds
// one row per run, for plots).
#pragma once
#include <string>
#include <vector>

#include "sweep/analysis.h"

namespace dsmoe {

std::string summary_text(const std::vector<VariantSummary>& variants);

// One header line of column names, then one line per variant in rank order; a missing value
// (no eval yet, no MoE layer) is an empty field.
std::string summary_csv(const std::vector<VariantSummary>& variants);

// /variants/<column> in rank order (/variants/variant: names), /runs/<column> in folder order
// (/runs/run: folder names); root attribute `experiment`. Written to a temporary name and renamed.
void write_summary_h5(const std::string& path, const std::string& experiment,
                      const std::vector<VariantSummary>& variants, const std::vector<RunMetrics>& runs);

}  // namespace dsmoe
