#include "util/host_memory.h"

#include <malloc.h>

namespace dsmoe {

void keep_freed_host_memory() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest: blocks up to 32 MiB come from the heap
  mallopt(M_TRIM_THRESHOLD, 1 << 30);   // and the heap's free top is not given back below 1 GiB
}

}  // namespace dsmoe
