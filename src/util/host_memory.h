// Host memory policy of the dsmoe process.
#pragma once

namespace dsmoe {

// The router and the dispatcher's plan allocate and free host vectors of megabytes for every MoE
// layer and step. glibc maps such blocks fresh and unmaps them on free, so every use pays page
// faults and zeroing, 3-9x the work itself (one core of the CI machine, a 16,384-token layer of
// 63 experts, top-7: route 36 -> 13 ms, its backward 13 -> 1.4 ms, the dispatcher's plan 9 ->
// 1.4 ms). Keeping freed memory in the process's heap avoids it; call once, first in main.
void keep_freed_host_memory();

}  // namespace dsmoe
