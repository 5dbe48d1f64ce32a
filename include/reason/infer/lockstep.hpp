// reason/infer/lockstep.hpp — decode loops over a model whose decode step is a collective.
//
// An expert-parallel model (model::Sharding{.expert}; moe/moe.hpp) exchanges the tokens of every
// decode step between the ranks of its expert group: each rank's experts serve every rank's tokens.
// So every rank must call decode_step as often as the others, although each decodes its own rows and
// they finish at different steps. The model says whether any rank still decodes
// (Transformer::any_rank_decoding: one all-reduce of a flag per step); a rank whose rows are done
// repeats its last position, its logits unused, until no rank decodes; a rank with no rows (left)
// joins with one dummy row (join_decoding). For a model without it these are `here` and nothing.
// The contract for callers: every rank of the group calls the same generation functions (rollout,
// generate_greedy, rl::evaluate) the same number of times, a rank without prompts with an empty list;
// generating on one rank alone with a split model waits forever. Bad input detected on some ranks only
// (an empty prompt, a prompt too long) throws there and leaves the others waiting, as any collective
// does; the examples end the whole job then (MPI_Abort).
#pragma once

#include <concepts>
#include <cstdint>
#include <vector>

#include "reason/core/view.hpp"

namespace reason::infer::detail {

/// A model whose decode steps are collectives over a group of ranks (Transformer::any_rank_decoding).
template <class Net>
concept LockstepDecoding = requires(const Net& net, bool here) {
  { net.any_rank_decoding(here) } -> std::convertible_to<bool>;
};

/// Whether any rank of the model's group still has rows to decode (`here`: whether this one has);
/// every rank calls it once per decode step, and once more to learn that none has.
template <class Net>
bool any_rank_decoding(const Net& net, bool here) {
  if constexpr (LockstepDecoding<Net>)
    return net.any_rank_decoding(here);
  else
    return here;
}

/// The test at the top of a decode loop at position `pos`, `done` saying whether this rank's rows are
/// all done: whether to decode `pos`. Without lockstep: !done. With it: true while this rank decodes;
/// once it is done, it repeats position pos - 1 (feed and logits as last time, the logits unused) with
/// the others until no rank decodes, then false.
template <class Net>
bool keep_decoding(const Net& net, const typename Net::T* params, bool done, View<const std::int32_t, 1> feed,
                   index_t pos, typename Net::DecodeState& state, View<typename Net::T, 2> logits) {
  if (!any_rank_decoding(net, !done)) return false;
  if (!done) return true;
  do net.decode_step(params, feed, pos - 1, state, logits);
  while (any_rank_decoding(net, false));
  return false;
}

/// A rank with no rows (left) while other ranks decode: joins each of their decode steps with one
/// dummy row at position 0 (its logits unused) until none decodes. Nothing without lockstep.
template <class Net>
void join_decoding(const Net& net, const typename Net::T* params) {
  if constexpr (LockstepDecoding<Net>) {
    if (!any_rank_decoding(net, false)) return;
    const index_t vocab = net.config().vocab_size;
    auto state = net.make_decode_state(1, 1);
    const std::int32_t token = 0;
    std::vector<typename Net::T> logits(static_cast<std::size_t>(vocab));
    do net.decode_step(params, make_view(&token, 1), 0, state, make_view(logits.data(), 1, vocab));
    while (any_rank_decoding(net, false));
  }
}

}  // namespace reason::infer::detail
