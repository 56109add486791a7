#include "model/generator.h"

#include <algorithm>

#include "util/check.h"

namespace dsmoe {

std::vector<float> Generator::next_logits(const std::vector<int32_t>& context) {
  DSMOE_ASSERT(!context.empty());
  const size_t seq_len = model_.config().model.seq_len;
  const size_t start = context.size() > seq_len ? context.size() - seq_len : 0;  // the window: [start, size)
  const size_t n = context.size() - start;
  const bool extends = start == 0 && cached_.size() < n && std::equal(cached_.begin(), cached_.end(), context.begin());
  const size_t first = extends ? cached_.size() : 0;
  model_.forward_positions(context.data() + start + first, static_cast<int>(first), static_cast<int>(n - first));
  cached_.assign(context.begin() + start, context.end());
  return model_.logits_row_to_host(static_cast<int>(n - 1));
}

}  // namespace dsmoe
