// reason/model/shard_plan.hpp — which part of the unsplit model's parameters one rank holds.
//
// A tensor- or expert-parallel rank's model declares only its share of the parameters, in a layout
// of its own (model/sharding.hpp). Its ShardPlan maps that local layout onto the full layout the
// unsplit model would have: every local tensor is the full tensor of the same name, or a set of
// runs of its rows or columns (a 2-D view [shape[0], numel / shape[0]] of it). From the plan
//   scatter(full, local)   a rank takes its share of full values (initialisation, a full checkpoint);
//   place(local, full)     writes its share back into full coordinates (gathering, checks);
// and the trainer's buffers (parallel/model_parallel.hpp) learn, per run of rows or columns, how
// many ranks hold the same values (`holders`: the gradient norm counts them once) and whether
// each holder computes only part of their gradient (`partial`: the holders' gradients are summed).
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/param_layout.hpp"

namespace reason::model {

/// A run of consecutive rows (dim 0) or columns (dim 1) of a local tensor and where it sits in the full one.
struct ShardPiece {
  index_t local_begin = 0, full_begin = 0, count = 0;
  int holders = 1;       // ranks holding these same values: the aligned block of `holders`
                         // consecutive ranks that contains this one (1: this rank alone)
  bool partial = false;  // each holder computes a part of their gradient; the parts sum to it
};

struct ShardEntry {
  std::size_t local = 0, full = 0;  // indices into the local and full layouts' params()
  int dim = 0;                      // the pieces are rows (0) or columns (1) of the [shape[0], rest] view
  std::vector<ShardPiece> pieces;
};

class ShardPlan {
 public:
  ShardPlan() = default;
  /// Checks that the entries cover every local tensor exactly once and stay inside their full tensors.
  ShardPlan(ParamLayout full, ParamLayout local, std::vector<ShardEntry> entries)
      : full_(std::move(full)), local_(std::move(local)), entries_(std::move(entries)) {
    const ParamLayout &full_ref = full_, &local_ref = local_;
    REASON_CHECK(entries_.size() == local_ref.params().size(), "ShardPlan: ", entries_.size(), " entries for ",
                 local_ref.params().size(), " local tensors");
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      const ShardEntry& e = entries_[i];
      REASON_CHECK(e.local == i && e.full < full_ref.params().size() && (e.dim == 0 || e.dim == 1),
                   "ShardPlan: entry ", i, " is malformed");
      const ParamInfo &l = local_ref.params()[e.local], &f = full_ref.params()[e.full];
      const auto [lr, lc] = matrix_shape(l);
      const auto [fr, fc] = matrix_shape(f);
      REASON_CHECK((e.dim == 0 ? lc == fc : lr == fr), "ShardPlan: '", l.name, "' ", shape_string(l.shape),
                   " is not a run of ", e.dim == 0 ? "rows" : "columns", " of '", f.name, "' ", shape_string(f.shape));
      index_t covered = 0;
      for (const ShardPiece& p : e.pieces) {
        const index_t lext = e.dim == 0 ? lr : lc, fext = e.dim == 0 ? fr : fc;
        REASON_CHECK(p.count > 0 && p.local_begin == covered && p.local_begin + p.count <= lext &&
                         p.full_begin >= 0 && p.full_begin + p.count <= fext && p.holders >= 1,
                     "ShardPlan: a piece of '", l.name, "' ([", p.local_begin, ", +", p.count, ") -> [", p.full_begin,
                     ", +", p.count, ")) is outside its tensor or out of order");
        covered += p.count;
      }
      REASON_CHECK(covered == (e.dim == 0 ? lr : lc), "ShardPlan: the pieces of '", l.name, "' cover ", covered,
                   " of its ", e.dim == 0 ? lr : lc, e.dim == 0 ? " rows" : " columns");
    }
  }

  [[nodiscard]] const ParamLayout& full_layout() const { return full_; }
  [[nodiscard]] const ParamLayout& local_layout() const { return local_; }
  [[nodiscard]] const std::vector<ShardEntry>& entries() const { return entries_; }

  /// Calls f(local_offset, full_offset, length, piece, entry) for every contiguous run of elements
  /// the rank holds (a row piece is one run; a column piece one run per row).
  template <class F>
  void for_each_run(F&& f) const {
    for (const ShardEntry& e : entries_) {
      const ParamInfo &l = local_.params()[e.local], &fi = full_.params()[e.full];
      const auto [lr, lc] = matrix_shape(l);
      const index_t fc = matrix_shape(fi).second;
      for (const ShardPiece& p : e.pieces) {
        if (e.dim == 0) {
          f(l.offset + static_cast<std::size_t>(p.local_begin * lc), fi.offset + static_cast<std::size_t>(p.full_begin * fc),
            static_cast<std::size_t>(p.count * lc), p, e);
        } else {
          for (index_t r = 0; r < lr; ++r)
            f(l.offset + static_cast<std::size_t>(r * lc + p.local_begin),
              fi.offset + static_cast<std::size_t>(r * fc + p.full_begin), static_cast<std::size_t>(p.count), p, e);
        }
      }
    }
  }

  /// local <- this rank's share of `full` (values in the full layout).
  template <class T>
  void scatter(std::span<const T> full, std::span<T> local) const {
    check_sizes("scatter", full.size(), local.size());
    for_each_run([&](std::size_t lo, std::size_t fo, std::size_t n, const ShardPiece&, const ShardEntry&) {
      std::copy_n(full.data() + fo, n, local.data() + lo);
    });
  }
  /// The elements of `full` this rank holds <- local; the others are left as they are.
  template <class T>
  void place(std::span<const T> local, std::span<T> full) const {
    check_sizes("place", full.size(), local.size());
    for_each_run([&](std::size_t lo, std::size_t fo, std::size_t n, const ShardPiece&, const ShardEntry&) {
      std::copy_n(local.data() + lo, n, full.data() + fo);
    });
  }

  /// A tensor as [shape[0], numel / shape[0]] (a vector as [n, 1]).
  static std::pair<index_t, index_t> matrix_shape(const ParamInfo& p) {
    const index_t rows = p.shape.empty() ? 1 : p.shape[0];
    return {rows, static_cast<index_t>(p.numel) / rows};
  }

 private:
  void check_sizes(const char* fn, std::size_t full, std::size_t local) const {
    REASON_CHECK(full == full_.size() && local == local_.size(), "ShardPlan::", fn, ": ", full, " full and ", local,
                 " local values, expected ", full_.size(), " and ", local_.size());
  }

  ParamLayout full_, local_;
  std::vector<ShardEntry> entries_;
};

}  // namespace reason::model
