#include "train/loss_spikes.h"

#include <algorithm>
#include <cmath>

namespace dsmoe {

bool LossSpikes::add(double loss, double* z) {
  if (!std::isfinite(loss)) return false;
  bool spike = false;
  if (recent_.size() == window_) {
    double mean = 0, var = 0;
    for (double l : recent_) mean += l / static_cast<double>(window_);
    for (double l : recent_) var += (l - mean) * (l - mean) / static_cast<double>(window_);
    // A floor on the spread: a flat stretch of losses must not make every wiggle a spike.
    const double sd = std::max(std::sqrt(var), 1e-3 * std::fabs(mean));
    *z = (loss - mean) / sd;
    spike = *z > threshold_;
    recent_.pop_front();
  }
  recent_.push_back(loss);
  return spike;
}

}  // namespace dsmoe
