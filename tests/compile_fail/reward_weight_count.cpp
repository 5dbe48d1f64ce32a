// expect: reward::Weighted<Weights\{w...\}, R...>: the number of weights differs from the number of reward policies
// Two weights for three rewards.
#include "reason/reward/accuracy.hpp"
#include "reason/reward/efficiency.hpp"
#include "reason/reward/format.hpp"
#include "reason/reward/weighted.hpp"

using Bad = reason::reward::Weighted<reason::reward::Weights{0.7f, 0.3f}, reason::reward::Accuracy,
                                     reason::reward::Format, reason::reward::Efficiency>;
float use() { return Bad{}.score("", reason::data::Problem{}); }
