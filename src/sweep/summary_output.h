// What `dsmoe analyze` writes: the report as text, summary.csv (a row per ranked variant),
// runs.csv (a row per run, finished or not), curves.csv (a row per variant and evaluation step:
// its validation loss against the baseline's) and summary.h5 (the three tables, the variants'
// order, the metric and the baseline), which experiments/analysis/plot.py draws.
#pragma once
#include <string>

#include "sweep/analysis.h"

namespace dsmoe {

std::string analysis_text(const Analysis& a);

// One header line of column names, then one line per row; a missing value is an empty field.
std::string variants_csv(const Analysis& a);
std::string runs_csv(const Analysis& a);
std::string curves_csv(const Analysis& a);

// Root attributes experiment, metric, metric_label, lower_is_better, baseline, confidence;
// /order/variant (the file's order); /variants/<column> (ranked), /runs/<column> and
// /curves/<column>, the columns of the CSVs. Written to a temporary name and renamed.
void write_summary_h5(const std::string& path, const Analysis& a);

}  // namespace dsmoe
