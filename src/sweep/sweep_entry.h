// One entry of an experiment's `sweep:` list expanded into variants: a named variant, or the
// combinations of a grid (cartesian product, first key slowest) and a zip (values in step).
#pragma once
#include <string>
#include <vector>

#include "sweep/experiment.h"
#include "sweep/yaml_reader.h"

namespace dsmoe::sweep_internal {

// The most variants an experiment may have (a grid's product of list lengths grows fast; a
// mistyped grid must not fill the memory).
constexpr size_t kMaxVariants = 1000;

// `default_free`: the iso-FLOPs key of variants that do not name their own `free`.
std::vector<Variant> read_sweep_entry(const Reader& r, const YAML::Node& entry, const std::string& default_free);

}  // namespace dsmoe::sweep_internal
