// reason/model/loss_result.hpp — what a forward over targets returns: the summed loss and its count.
#pragma once

#include "reason/core/view.hpp"

namespace reason::model {

/// Mean of a summed loss over `count` target tokens.
struct LossResult {
  double loss_sum = 0;
  index_t count = 0;
  [[nodiscard]] double mean() const { return count ? loss_sum / static_cast<double>(count) : 0.0; }
};

}  // namespace reason::model
