// The source version this build was made from (git describe of the checkout at build time, with
// "-dirty" for uncommitted changes; "unknown" outside a git checkout unless the build was
// configured with -DDSMOE_SOURCE_VERSION=...). Runs record it (docs/metrics.md).
#pragma once

namespace dsmoe {

const char* source_version();

}  // namespace dsmoe
