// expect: reward::Weighted: component 3 \(counting from 1\) is not a reward policy
// A type with no score() given as the third component of a weighted reward.
#include "reason/reward/accuracy.hpp"
#include "reason/reward/format.hpp"
#include "reason/reward/weighted.hpp"

struct NotAReward {};
using Bad = reason::reward::Weighted<reason::reward::Weights{0.5f, 0.3f, 0.2f}, reason::reward::Accuracy,
                                     reason::reward::Format, NotAReward>;
float use() { return Bad{}.score("", reason::data::Problem{}); }
