#include "comm/groups.h"

#include "util/check.h"

namespace dsmoe {

ProcessGroups::ProcessGroups(Comm& w, int expert_parallel) : world(w) {
  const int E = expert_parallel > 0 ? expert_parallel : w.size();
  DSMOE_CHECK(w.size() % E == 0, "parallel.expert_parallel: ", E, " does not divide the ", w.size(), " ranks");
  ep = w.split(w.rank() / E, w.rank());
  dp = w.split(w.rank() % E, w.rank());
}

}  // namespace dsmoe
