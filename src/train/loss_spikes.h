// Loss spikes: a step whose loss stands far above the recent ones (z-score over a window of the
// last finite losses). Training goes on; the trainer logs them, so a long run's log says where
// the loss jumped.
#pragma once
#include <cstddef>
#include <deque>

namespace dsmoe {

class LossSpikes {
 public:
  explicit LossSpikes(size_t window = 50, double threshold = 6.0) : window_(window), threshold_(threshold) {}
  // Adds a step's loss; true when it is a spike, with its z-score in *z. Spikes join the window
  // (a new level becomes normal); non-finite losses are ignored.
  bool add(double loss, double* z);

 private:
  size_t window_;
  double threshold_;
  std::deque<double> recent_;
};

}  // namespace dsmoe
