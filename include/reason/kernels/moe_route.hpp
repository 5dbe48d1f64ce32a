// reason/kernels/moe_route.hpp — routing primitives of a mixture-of-experts layer (host).
//
// The gate's arithmetic, with no policy in it:
//   moe_select          top-k experts per token by score + bias, optionally group-limited
//                       (DeepSeek-V3, §2.1.2: a group's score is the sum of its two best
//                       experts' scores; the best `top_groups` groups are kept, then the top-k
//                       experts among them). Ties go to the lower index, so routing is a pure
//                       function of the scores.
//   moe_weights         combine weights of the chosen experts: scale * s_e, or, normalised,
//                       scale * s_e / sum_{j chosen} s_j; and its backward.
//   moe_balance_loss    the load-balancing loss alpha * sum_i f_i P_i per segment of rows, with
//                       f_i = E / (k T) * (tokens choosing i), P_i = mean_t p_{t,i} (Switch
//                       Transformer, Fedus et al. 2021, eq. 4, when the segment is the batch;
//                       DeepSeek-V3's sequence-wise loss, eqs. 17-20, when it is a sequence);
//                       averaged over segments; and its gradient in p (f is a count: constant).
// Scores are the activated gate outputs (softmax or sigmoid) [N, E]; experts [N, k] int32.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/parallel.hpp"
#include "reason/core/view.hpp"

namespace reason::kernels {

/// Chooses top_k experts per row of scores [N, E] by scores + bias (bias [E] may be empty);
/// with groups > 1 only experts of the top_groups best groups compete. experts [N, k] receives
/// them best first.
template <class T>
void moe_select(View<const T, 2> scores, View<const T, 1> bias, int top_k, int groups, int top_groups,
                View<std::int32_t, 2> experts) {
  const index_t n = scores.size(0), e = scores.size(1);
  REASON_CHECK(top_k >= 1 && top_k <= e, "moe_select: top_k = ", top_k, " with ", e, " experts");
  REASON_CHECK(groups >= 1 && e % groups == 0 && top_groups >= 1 && top_groups <= groups &&
                   top_k <= top_groups * (e / groups),
               "moe_select: ", e, " experts in ", groups, " groups, ", top_groups, " kept, top_k = ", top_k,
               "; expected groups dividing experts and top_k <= kept groups x experts per group");
  expect_shape(experts, "moe_select: experts", {n, top_k});
  expect_unit_inner_stride(scores, "moe_select: scores");
  if (bias.data != nullptr) expect_shape(bias, "moe_select: bias", {e});
  const index_t per_group = e / groups;
  parallel_for(n, std::max<index_t>(1, 2048 / e), [&](index_t r0, index_t r1) {
    std::vector<double> choice(static_cast<std::size_t>(e));
    std::vector<int> order(static_cast<std::size_t>(e)), group_order(static_cast<std::size_t>(groups));
    std::vector<double> group_score(static_cast<std::size_t>(groups));
    std::vector<char> allowed(static_cast<std::size_t>(e));
    for (index_t r = r0; r < r1; ++r) {
      const T* s = scores.row(r);
      for (index_t j = 0; j < e; ++j) choice[j] = static_cast<double>(s[j]) + (bias.data ? static_cast<double>(bias(j)) : 0.0);
      auto better = [&](int a, int b) { return choice[a] > choice[b] || (choice[a] == choice[b] && a < b); };
      std::fill(allowed.begin(), allowed.end(), char(1));
      if (groups > 1) {
        for (int g = 0; g < groups; ++g) {  // sum of the group's two best (its only one if it has one)
          double best = -INFINITY, second = -INFINITY;
          for (index_t j = g * per_group; j < (g + 1) * per_group; ++j) {
            if (choice[j] > best) {
              second = best;
              best = choice[j];
            } else if (choice[j] > second) {
              second = choice[j];
            }
          }
          group_score[g] = per_group >= 2 ? best + second : best;
        }
        std::iota(group_order.begin(), group_order.end(), 0);
        std::partial_sort(group_order.begin(), group_order.begin() + top_groups, group_order.end(), [&](int a, int b) {
          return group_score[a] > group_score[b] || (group_score[a] == group_score[b] && a < b);
        });
        std::fill(allowed.begin(), allowed.end(), char(0));
        for (int i = 0; i < top_groups; ++i)
          std::fill(allowed.begin() + group_order[i] * per_group, allowed.begin() + (group_order[i] + 1) * per_group, char(1));
      }
      int m = 0;
      for (int j = 0; j < e; ++j)
        if (allowed[j]) order[m++] = j;
      std::partial_sort(order.begin(), order.begin() + top_k, order.begin() + m, better);
      for (int i = 0; i < top_k; ++i) experts(r, i) = order[i];
    }
  });
}

/// weights [N, k] = scale * s_e (normalize: scale * s_e / sum of the chosen s) for experts [N, k].
template <class T>
void moe_weights(View<const T, 2> scores, View<const std::int32_t, 2> experts, bool normalize, double scale,
                 View<T, 2> weights) {
  const index_t n = scores.size(0), k = experts.size(1);
  expect_shape(experts, "moe_weights: experts", {n, k});
  expect_shape(weights, "moe_weights: weights", {n, k});
  for (index_t r = 0; r < n; ++r) {
    double z = 0;
    for (index_t j = 0; j < k; ++j) z += static_cast<double>(scores(r, experts(r, j)));
    const double f = normalize ? scale / z : scale;
    for (index_t j = 0; j < k; ++j) weights(r, j) = static_cast<T>(f * static_cast<double>(scores(r, experts(r, j))));
  }
}

/// dscores [N, E] += d(weights)/d(scores)^T dweights, for the weights of moe_weights.
/// Normalised, with z = sum_chosen s and w_i = scale s_i / z:
///   ds_j = scale / z * (dw_j - sum_i dw_i s_i / z)   for chosen j.
template <class T>
void moe_weights_backward(View<const T, 2> scores, View<const std::int32_t, 2> experts, bool normalize, double scale,
                          View<const T, 2> dweights, View<T, 2> dscores) {
  const index_t n = scores.size(0), k = experts.size(1);
  expect_shape(dweights, "moe_weights_backward: dweights", {n, k});
  expect_shape(dscores, "moe_weights_backward: dscores", scores.shape);
  for (index_t r = 0; r < n; ++r) {
    if (!normalize) {
      for (index_t j = 0; j < k; ++j) dscores(r, experts(r, j)) += static_cast<T>(scale * static_cast<double>(dweights(r, j)));
      continue;
    }
    double z = 0, dot = 0;
    for (index_t j = 0; j < k; ++j) {
      const double s = static_cast<double>(scores(r, experts(r, j)));
      z += s;
      dot += static_cast<double>(dweights(r, j)) * s;
    }
    for (index_t j = 0; j < k; ++j)
      dscores(r, experts(r, j)) += static_cast<T>(scale / z * (static_cast<double>(dweights(r, j)) - dot / z));
  }
}

/// The balance loss over consecutive segments of `segment` rows of probs [N, E] (N a multiple
/// of segment): mean over segments of alpha * sum_i f_i P_i (see the file comment).
template <class T>
double moe_balance_loss(View<const T, 2> probs, View<const std::int32_t, 2> experts, index_t segment, double alpha) {
  const index_t n = probs.size(0), e = probs.size(1), k = experts.size(1);
  REASON_CHECK(segment > 0 && n % segment == 0, "moe_balance_loss: ", n, " rows are not whole segments of ", segment);
  expect_shape(experts, "moe_balance_loss: experts", {n, k});
  std::vector<double> f(static_cast<std::size_t>(e)), p(static_cast<std::size_t>(e));
  double total = 0;
  for (index_t r0 = 0; r0 < n; r0 += segment) {
    std::fill(f.begin(), f.end(), 0.0);
    std::fill(p.begin(), p.end(), 0.0);
    for (index_t r = r0; r < r0 + segment; ++r) {
      for (index_t j = 0; j < k; ++j) f[experts(r, j)] += 1;
      for (index_t i = 0; i < e; ++i) p[i] += static_cast<double>(probs(r, i));
    }
    double l = 0;
    for (index_t i = 0; i < e; ++i) l += f[i] * static_cast<double>(e) / static_cast<double>(k * segment) * p[i] / static_cast<double>(segment);
    total += alpha * l;
  }
  return total / static_cast<double>(n / segment);
}

/// dprobs [N, E] += weight * d(moe_balance_loss)/d(probs): weight * alpha * f_i / (T S) per row,
/// S the number of segments.
template <class T>
void moe_balance_loss_backward(View<const std::int32_t, 2> experts, index_t segment, double alpha, double weight,
                               View<T, 2> dprobs) {
  const index_t n = dprobs.size(0), e = dprobs.size(1), k = experts.size(1);
  REASON_CHECK(segment > 0 && n % segment == 0, "moe_balance_loss_backward: ", n, " rows are not whole segments of ", segment);
  const double segments = static_cast<double>(n / segment);
  std::vector<double> f(static_cast<std::size_t>(e));
  for (index_t r0 = 0; r0 < n; r0 += segment) {
    std::fill(f.begin(), f.end(), 0.0);
    for (index_t r = r0; r < r0 + segment; ++r)
      for (index_t j = 0; j < k; ++j) f[experts(r, j)] += 1;
    for (index_t i = 0; i < e; ++i)
      f[i] = weight * alpha * f[i] * static_cast<double>(e) / static_cast<double>(k * segment) / static_cast<double>(segment) / segments;
    for (index_t r = r0; r < r0 + segment; ++r)
      for (index_t i = 0; i < e; ++i) dprobs(r, i) += static_cast<T>(f[i]);
  }
}

}  // namespace reason::kernels
