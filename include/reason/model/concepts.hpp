// reason/model/concepts.hpp — what a policy must provide to be composed into a model.
//
// One concept per family, checked by one static_assert at the entry point (the Transformer),
// so a wrong combination fails at one readable line instead of in a page of template errors.
// A policy is a type whose nested `Module` template is instantiated for the scalar type T
// (and, for modules that hold projections, for the linear-layer policy).
#pragma once

#include <concepts>
#include <cstdint>
#include <span>
#include <string>

#include "reason/attention/shape.hpp"
#include "reason/core/arena.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/core/view.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/linear/dense.hpp"
#include "reason/precision/precision.hpp"

namespace reason::model {

/// A linear-layer policy: Module<T>(layout, name, in, out, init_std) with forward/backward.
template <class L>
concept LinearPolicy = std::constructible_from<typename L::template Module<float>, ParamLayout&, std::string, index_t, index_t, double> && requires(typename L::template Module<float> m, ParamLayout& layout, const float* p, float* g,
                                View<const float, 2> x, View<float, 2> y) {
  m.forward(p, x, y);
  m.backward(p, g, x, x, y);
};

/// A norm policy: Module<T>(layout, name, width, eps) with forward/backward saving one value per row.
template <class N>
concept NormPolicy = std::constructible_from<typename N::template Module<float>, ParamLayout&, std::string, index_t, double> && requires(typename N::template Module<float> m, ParamLayout& layout, const float* p, float* g,
                              View<const float, 2> x, View<float, 2> y, View<float, 1> r) {
  m.forward(p, x, y, r);
  m.backward(p, g, x, View<const float, 1>(r), x, y);
};

/// An attention policy: compile-time head_dim; Module<T, Linear> with Saved/Scratch/Cache,
/// forward/backward for training and decode against its own KV cache layout:
///   cache_elems(max_seq)   elements of one sequence's cache in one layer, for max_seq positions
///                          (a ring buffer's does not grow past its window);
///   cache_history()        how many past positions the cache keeps (0: all of them), which
///                          bounds how far decoding may rewind;
///   cache_at(memory, batch, max_seq), decode_scratch_elems(batch), decode(...).
template <class A>
concept AttentionPolicy = std::constructible_from<typename A::template Module<float, linear::Dense>, ParamLayout&, std::string, attention::Dims> && requires(typename A::template Module<float, linear::Dense> m, ParamLayout& layout,
                                   Arena& arena, const float* p, float* g, float* mem, View<const float, 2> x,
                                   View<const std::int32_t, 1> pos, View<float, 2> y) {
  { A::head_dim } -> std::convertible_to<int>;
  typename A::template Module<float, linear::Dense>::Saved;
  typename A::template Module<float, linear::Dense>::Scratch;
  typename A::template Module<float, linear::Dense>::Cache;
  { m.carve(arena, index_t{}, index_t{}) } -> std::same_as<typename A::template Module<float, linear::Dense>::Saved>;
  { m.carve_scratch(arena, index_t{}, index_t{}) } -> std::same_as<typename A::template Module<float, linear::Dense>::Scratch>;
  m.forward(p, index_t{}, x, pos, m.carve(arena, index_t{}, index_t{}), y);
  m.backward(p, g, index_t{}, x, pos, m.carve(arena, index_t{}, index_t{}), m.carve_scratch(arena, index_t{}, index_t{}), x, y);
  { m.cache_elems(index_t{}) } -> std::convertible_to<index_t>;
  { m.cache_history() } -> std::convertible_to<index_t>;
  { m.decode_scratch_elems(index_t{}) } -> std::convertible_to<index_t>;
  m.decode(p, x, index_t{}, m.cache_at(mem, index_t{}, index_t{}), mem, y);
};

/// A feed-forward policy: Module<T, Linear>(layout, name, ffn::Dims) with Saved/Scratch and forward/backward.
template <class F>
concept FfnPolicy = std::constructible_from<typename F::template Module<float, linear::Dense>, ParamLayout&, std::string, ffn::Dims> && requires(typename F::template Module<float, linear::Dense> m, ParamLayout& layout, Arena& arena,
                             const float* p, float* g, View<const float, 2> x, View<float, 2> y) {
  typename F::template Module<float, linear::Dense>::Saved;
  typename F::template Module<float, linear::Dense>::Scratch;
  { m.carve(arena, index_t{}) } -> std::same_as<typename F::template Module<float, linear::Dense>::Saved>;
  { m.carve_scratch(arena, index_t{}) } -> std::same_as<typename F::template Module<float, linear::Dense>::Scratch>;
  m.forward(p, x, m.carve(arena, index_t{}), y);
  m.backward(p, g, x, m.carve(arena, index_t{}), m.carve_scratch(arena, index_t{}), x, y);
};

/// A routed (mixture-of-experts) feed-forward policy: an FfnPolicy whose Module also reports
/// router statistics, balances its experts after an optimizer step and weights its aux loss;
/// `dense_policy` is the FFN of the model's first, dense layers.
template <class F>
concept RoutedFfnPolicy = FfnPolicy<F> && FfnPolicy<typename F::dense_policy> && requires(
    typename F::template Module<float, linear::Dense> m, Arena& arena, float* p, std::span<const double> load) {
  requires F::routed;
  { F::experts } -> std::convertible_to<int>;
  { F::signature() } -> std::convertible_to<std::string>;
  m.carve(arena, index_t{}, index_t{});
  m.stats(m.carve(arena, index_t{}));
  m.balance(p, load);
  F::template Module<float, linear::Dense>::set_aux_weight(m.carve(arena, index_t{}), 1.0);
};

}  // namespace reason::model
