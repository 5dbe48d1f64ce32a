// reason/reward/all.hpp — every rule reward in one include (a convenience; include what you use).
#pragma once

#include "reason/reward/accuracy.hpp"
#include "reason/reward/concept.hpp"
#include "reason/reward/efficiency.hpp"
#include "reason/reward/format.hpp"
#include "reason/reward/number.hpp"
#include "reason/reward/overlong.hpp"
#include "reason/reward/score_batch.hpp"
#include "reason/reward/tags.hpp"
#include "reason/reward/weighted.hpp"
