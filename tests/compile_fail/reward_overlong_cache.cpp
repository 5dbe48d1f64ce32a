// expect: reward::Overlong<OverlongConfig\{.max_length = L, .cache = C\}>: needs 0 < C <= L
// A punishment cache longer than the maximum length.
#include "reason/reward/overlong.hpp"

using Bad = reason::reward::Overlong<reason::reward::OverlongConfig{.max_length = 100, .cache = 200}>;
float use() { return Bad{}.score("", reason::data::Problem{}); }
