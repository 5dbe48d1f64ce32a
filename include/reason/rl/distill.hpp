// reason/rl/distill.hpp — knowledge distillation: a student matches a teacher's softened
// next-token distribution and the hard targets, as an objective for forward_objective.
//
// Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network", §2: with
// temperature tau, p = softmax(teacher / tau), q = softmax(student / tau), per position n,
//   loss_n = alpha tau^2 KL(p || q) + (1 - alpha) CE(softmax(student), target_n)
//   d loss_n / d student_v = alpha tau (q_v - p_v) + (1 - alpha) (softmax(student)_v - [v = target_n])
// The tau^2 keeps the soft term's gradient size independent of tau (Hinton et al., end of §2).
// DistillConfig::divergence = reverse_kl uses KL(q || p) instead, the mode-seeking direction of
// on-policy distillation (Gu et al. 2024, MiniLLM; Agarwal et al. 2024, GKD):
//   d KL(q || p) / d student_v = (1 / tau) q_v ((log q_v - log p_v) - KL(q || p)).
// The batch loss is the mean over the rows with a target (target >= 0; < 0: prompt or padding,
// no loss). DeepSeek-R1 §2.4 distils with plain SFT on teacher samples — alpha = 0 here.
//
// Design rule: the teacher's logits [N, V] come from the caller (Transformer::logits on the
// teacher for the same tokens), the student's are the chunk forward_objective passes; each row
// is done from three log-sum-exps, without scratch, and overwritten with its gradient. Which
// divergence is the algorithm, so it is a structural NTTP; alpha and tau are coefficients.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/parallel.hpp"
#include "reason/core/view.hpp"

namespace reason::rl {

/// Which KL the soft term measures.
enum class Divergence {
  forward_kl,  // KL(teacher || student): Hinton et al. 2015
  reverse_kl,  // KL(student || teacher): MiniLLM / GKD
};

struct DistillConfig {
  Divergence divergence = Divergence::forward_kl;
};

/// Run-time coefficients of the distillation loss.
struct DistillCoefficients {
  double alpha = 0.5;        // weight of the soft (KL) term; 1 - alpha on the cross-entropy
  double temperature = 1.0;  // tau > 0
  double count = 0;          // normaliser: 0 = this batch's target rows; the step's for micro-batches
};

struct DistillStats {
  double loss = 0;     // the aggregated loss
  double mean_kl = 0;  // mean KL (without alpha tau^2) over the rows with a target
  double mean_ce = 0;  // mean cross-entropy over the same rows
  index_t rows = 0;
};

template <DistillConfig C = DistillConfig{}>
struct Distill {
  static constexpr DistillConfig config = C;

  template <class T>
  class Batch {
   public:
    /// teacher [N, V] logits for the rows of the student's forward; targets [N] (< 0: ignored).
    Batch(View<const T, 2> teacher, View<const std::int32_t, 1> targets, DistillCoefficients coef)
        : teacher_(teacher), targets_(targets), coef_(coef) {
      expect_shape(targets, "Distill::Batch: targets", {teacher.size(0)});
      REASON_CHECK(coef.temperature > 0, "Distill::Batch: temperature = ", coef.temperature, ", expected > 0");
      REASON_CHECK(coef.alpha >= 0 && coef.alpha <= 1, "Distill::Batch: alpha = ", coef.alpha, ", expected in [0, 1]");
      index_t n = 0;
      for (index_t i = 0; i < targets.size(0); ++i) {
        REASON_CHECK(targets(i) < teacher.size(1), "Distill::Batch: targets[", i, "] = ", targets(i),
                     " outside the vocabulary of ", teacher.size(1));
        n += targets(i) >= 0;
      }
      weight_ = n == 0 ? 0.0 : 1.0 / (coef.count > 0 ? coef.count : static_cast<double>(n));
    }

    double operator()(index_t first_row, View<T, 2> logits) {
      const index_t R = logits.size(0), V = logits.size(1);
      expect_shape(teacher_.slice(0, 0, 1), "Distill::Batch: teacher logits (one row)", {1, V});
      REASON_CHECK(first_row + R <= teacher_.size(0), "Distill::Batch: rows [", first_row, ", ", first_row + R,
                   ") beyond the teacher's ", teacher_.size(0), " rows");
      if (first_row == 0) stats_ = {};
      rows_.assign(static_cast<std::size_t>(R), Row{});
      parallel_for(R, std::max<index_t>(1, 16384 / std::max<index_t>(1, V)), [&](index_t r0, index_t r1) {
        for (index_t r = r0; r < r1; ++r) rows_[static_cast<std::size_t>(r)] = row(first_row + r, logits.row(r), V);
      });
      double loss = 0;
      for (const Row& r : rows_) {
        if (!r.counted) continue;
        const double l = weight_ * (coef_.alpha * coef_.temperature * coef_.temperature * r.kl + (1 - coef_.alpha) * r.ce);
        loss += l;
        stats_.rows += 1;
        stats_.mean_kl += r.kl;  // sums until stats() divides
        stats_.mean_ce += r.ce;
      }
      stats_.loss += loss;
      return loss;
    }

    [[nodiscard]] DistillStats stats() const {
      DistillStats s = stats_;
      if (s.rows > 0) {
        s.mean_kl /= static_cast<double>(s.rows);
        s.mean_ce /= static_cast<double>(s.rows);
      }
      return s;
    }

   private:
    struct Row {
      double kl = 0, ce = 0;
      bool counted = false;
    };

    static double logsumexp(const T* x, index_t V, double scale) {
      double mx = -INFINITY;
      for (index_t v = 0; v < V; ++v) mx = std::max(mx, scale * static_cast<double>(x[v]));
      double s = 0;
      for (index_t v = 0; v < V; ++v) s += std::exp(scale * static_cast<double>(x[v]) - mx);
      return mx + std::log(s);
    }

    Row row(index_t n, T* x, index_t V) const {
      const std::int32_t target = targets_(n);
      if (target < 0) {
        std::fill(x, x + V, T(0));
        return {};
      }
      const T* t = teacher_.row(n);
      const double tau = coef_.temperature, inv = 1.0 / tau, a = coef_.alpha;
      const double lse_s1 = logsumexp(x, V, 1.0), lse_s = logsumexp(x, V, inv), lse_t = logsumexp(t, V, inv);
      auto log_q = [&](index_t v) { return inv * static_cast<double>(x[v]) - lse_s; };
      auto log_p = [&](index_t v) { return inv * static_cast<double>(t[v]) - lse_t; };
      double kl = 0;
      for (index_t v = 0; v < V; ++v) {
        if constexpr (C.divergence == Divergence::forward_kl) {
          const double lp = log_p(v);
          if (lp > -INFINITY) kl += std::exp(lp) * (lp - log_q(v));
        } else {
          const double lq = log_q(v);
          if (lq > -INFINITY) kl += std::exp(lq) * (lq - log_p(v));
        }
      }
      const Row out{kl, lse_s1 - static_cast<double>(x[target]), true};
      const double w = weight_;
      for (index_t v = 0; v < V; ++v) {  // each gradient element reads only x[v]: safe in place
        const double lq = log_q(v), q = std::exp(lq);
        double soft;
        if constexpr (C.divergence == Divergence::forward_kl) {
          soft = tau * (q - std::exp(log_p(v)));
        } else {
          soft = q > 0 ? tau * q * ((lq - log_p(v)) - kl) : 0.0;
        }
        const double hard = std::exp(static_cast<double>(x[v]) - lse_s1) - (v == target ? 1.0 : 0.0);
        x[v] = static_cast<T>(w * (a * soft + (1 - a) * hard));
      }
      return out;
    }

    View<const T, 2> teacher_;
    View<const std::int32_t, 1> targets_;
    DistillCoefficients coef_;
    double weight_ = 0;
    std::vector<Row> rows_;
    DistillStats stats_;
  };
};

}  // namespace reason::rl
