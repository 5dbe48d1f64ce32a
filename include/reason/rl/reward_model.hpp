// reason/rl/reward_model.hpp — a learned reward model: the transformer with a scalar head,
// trained on preference pairs with the Bradley-Terry loss, scored like any rule reward.
//
// InstructGPT (Ouyang et al. 2022, §3.5): the RM is the language model with its unembedding
// replaced by a scalar projection; r_theta(x, y) is that scalar for prompt x and completion y,
// trained with eq. 1,  loss = -E log sigmoid(r_theta(x, y_c) - r_theta(x, y_r)),  the mean over
// comparisons (rl/bradley_terry.hpp). DeepSeek-R1 (DeepSeek-AI 2025, §2.2.2) deliberately trains
// reasoning with rule rewards only; this is the learned model the issue asks for beside them,
// and like them it satisfies reward::Reward, so reward::Weighted composes it with the rules:
//     reward::Weighted<reward::Weights{0.5f, 0.5f}, reward::Format, rl::RewardModel<Net>>
//
// Where the reward is read: r(x, y) = w . h_last + b, h_last the final hidden state (after the
// final norm) at the *last token of the completion* (the last token of the prompt when y is
// empty). InstructGPT's RM maps the whole (prompt, response) to one scalar (§3.5, eq. 1); in a
// causal model the last token's state is the only one that has seen all of x and y, and it is
// where the implementations of that RM read it (Stiennon et al. 2020's end-of-text token; the
// last non-pad token in Hugging Face's sequence-classification heads, which TRL trains). It also
// makes right-padding free: the padding comes after the read position and a causal model never
// looks forward, so a batch of rows padded to one length gives each row the reward it has alone.
//
// Long inputs: the model sees at most M = max_seq_len tokens. When prompt (P tokens) plus
// completion (K tokens) exceed M, the row keeps the *end* of the completion — the reward is
// read there and that is where an answer is — and as much of the *start* of the prompt as
// fits, but never less than half the window for the completion: it keeps the completion's last
// c = min(K, max(M - P, ceil(M / 2))) tokens and the prompt's first M - c. A completion that
// fits beside the whole prompt is therefore never cut, and score() tokenizes only the last
// 9c + 8 bytes of a long text (detail::tail_tokens), so a megabyte completion costs what a
// window does. Training uses the same rule, so what is trained is what is scored.
//
// Design rule: the backbone is a model::Transformer used as is (forward_hidden, hidden_grad,
// backward); the head is rl::ValueHead's arithmetic under its own names. One flat buffer holds
// every parameter: the backbone's tensors exactly as Net lays them out (so an SFT or policy
// checkpoint loads into backbone_params() unchanged), then reward_head.weight [C] and
// reward_head.bias [1] — layout() names them all, ready for io/safetensors. lm_head.weight stays
// in the buffer (the layout is Net's) but the reward never reads it; its gradient is zero.
// The Bradley-Terry loss sees only differences r_c - r_r, so it cannot move the bias either
// (its gradient is d_c + d_r = 0 per pair); the bias holds the offset that center() sets, as
// InstructGPT normalises its RM "using a bias so that the labeler demonstrations achieve a mean
// score of 0 before doing RL" (§3.5).
//
// Constness: the Transformer's forward writes its activation arena, so the model is a mutable
// workspace behind the const score(): every call that runs it takes one mutex, which makes
// concurrent score() calls safe (they run one at a time; one RewardModel per thread runs them in
// parallel). score() never throws: anything a model can emit is scored; the only failure left
// (out of memory) and a NaN (diverged parameters) give 0, and a value beyond float's range is
// clamped to it. The batch and training functions check their input and throw reason::Error
// naming the tensor and its shape.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "reason/core/error.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/core/view.hpp"
#include "reason/data/arithmetic.hpp"
#include "reason/data/sft_batch.hpp"
#include "reason/data/tokenizer.hpp"
#include "reason/model/config.hpp"
#include "reason/optim/adamw.hpp"
#include "reason/optim/concepts.hpp"
#include "reason/rl/bradley_terry.hpp"
#include "reason/rl/ppo.hpp"
#include "reason/train/clip.hpp"

namespace reason::rl {

/// One comparison as tokens: (prompt, chosen) is preferred to (prompt, rejected).
struct PreferencePair {
  std::vector<std::int32_t> prompt;    // e.g. data::prompt_tokens(problem): question <think>
  std::vector<std::int32_t> chosen;    // the preferred completion
  std::vector<std::int32_t> rejected;  // the other completion
};

/// The pair for `problem` with two completion texts (as score() would tokenize them).
[[nodiscard]] inline PreferencePair preference_pair(const data::Problem& problem, std::string_view chosen,
                                                    std::string_view rejected) {
  return {data::prompt_tokens(problem), data::Tokenizer::encode(chosen), data::Tokenizer::encode(rejected)};
}

/// What a batch of pairs scored.
struct PairStats {
  double loss = 0;         // mean Bradley-Terry loss (times pairs / normaliser when one is given)
  double accuracy = 0;     // share of pairs with r_chosen > r_rejected
  double mean_margin = 0;  // mean r_chosen - r_rejected
  index_t pairs = 0;
};

/// Run-time numbers of a reward model.
struct RewardModelOptions {
  std::uint64_t seed = 1;       // Philox seed of the initial parameters (backbone and head)
  double head_init_std = 0.02;  // normal init of reward_head.weight; reward_head.bias starts at 0
  index_t score_rows = 32;      // rows per forward in score_batch (bounds the activation arena)
};

/// A model the reward model can run: model::Transformer's hidden-state interface.
template <class N>
concept RewardBackbone = requires { typename N::T; } &&
    requires(N& net, const N& cnet, const typename N::T* p, typename N::T* g, View<const std::int32_t, 2> tokens) {
      { cnet.config() } -> std::convertible_to<const model::Config&>;
      { cnet.layout() } -> std::convertible_to<const ParamLayout&>;
      { cnet.num_params() } -> std::convertible_to<std::size_t>;
      net.reserve(index_t{1}, index_t{1});
      { net.forward_hidden(p, tokens, true) } -> std::same_as<View<const typename N::T, 2>>;
      { net.hidden_grad() } -> std::same_as<View<typename N::T, 2>>;
      net.backward(p, g);
    };

namespace detail {

/// The longest special string; every one has its only '<' at index 0 (tail_tokens relies on it).
inline constexpr std::size_t longest_special = [] {
  std::size_t n = 0;
  for (std::string_view s : data::Tokenizer::special_strings) n = std::max(n, s.size());
  return n;
}();
static_assert([] {
  for (std::string_view s : data::Tokenizer::special_strings)
    if (s.empty() || s[0] != '<' || s.find('<', 1) != std::string_view::npos) return false;
  return true;
}(), "rl::detail::tail_tokens: every special string must start with its only '<'");

/// The last min(k, |encode(text)|) tokens of Tokenizer::encode(text), from its last 9k + 8 bytes.
/// Why that suffix gives exactly those tokens: encode is a left-to-right scan whose only state is
/// the position. Cut the text at byte `cut` and let s >= cut be the first token boundary of the
/// full encoding. If cut < s, the cut lies inside a special string, and its bytes [cut, s) hold
/// no '<' (a special's only '<' is its first byte), so the cut scan emits them as byte tokens and
/// arrives at s: from s on the two encodings agree. s <= cut + 8, so at least 9k bytes, hence at
/// least k whole tokens (each at most 9 bytes), follow s — the last k tokens are the same.
[[nodiscard]] inline std::vector<std::int32_t> tail_tokens(std::string_view text, std::size_t k) {
  const std::size_t reach = k * longest_special + (longest_special - 1);
  if (text.size() > reach) text = text.substr(text.size() - reach);
  std::vector<std::int32_t> ids;
  ids.reserve(text.size());
  data::Tokenizer::encode_into(text, ids);
  if (ids.size() > k) ids.erase(ids.begin(), ids.end() - static_cast<std::ptrdiff_t>(k));
  return ids;
}

}  // namespace detail

/// r(prompt, completion) = w . h_last + b on a Transformer backbone (see the top of the file).
template <class Net>
class RewardModel {
  static_assert(RewardBackbone<Net>,
                "rl::RewardModel<Net>: Net must be a model::Transformer (forward_hidden, hidden_grad, backward)");

 public:
  using T = typename Net::T;
  static constexpr const char* name = "reward_model";

  /// A fresh model: Net's parameters and the head initialised from options.seed. The vocabulary
  /// must be data::Tokenizer's, since score() tokenizes text with it.
  explicit RewardModel(const model::Config& config, RewardModelOptions options = {})
      : net_(std::make_unique<Net>(config)), head_(config.hidden_size, options.head_init_std), options_(options) {
    REASON_CHECK(config.vocab_size == data::Tokenizer::vocab_size, "RewardModel: the model's vocabulary has ",
                 config.vocab_size, " tokens but completions are tokenized with data::Tokenizer's ",
                 data::Tokenizer::vocab_size);
    REASON_CHECK(options.score_rows > 0, "RewardModel: score_rows = ", options.score_rows, ", expected > 0");
    for (const ParamInfo& p : net_->layout().params()) layout_.add(p.name, p.shape, p.init, p.init_std);
    head_offset_ = layout_.size();
    for (const ParamInfo& p : head_.layout().params())  // value_head.weight, value_head.bias -> reward_head.*
      layout_.add("reward_head" + p.name.substr(p.name.find('.')), p.shape, p.init, p.init_std);
    REASON_CHECK(layout_.size() - head_offset_ == head_.num_params(), "RewardModel: head layout mismatch");
    params_.assign(layout_.size(), T(0));
    layout_.initialize(std::span<T>(params_), options.seed);
  }

  [[nodiscard]] const model::Config& config() const { return net_->config(); }
  [[nodiscard]] const RewardModelOptions& options() const { return options_; }
  /// Every parameter: Net's layout, then reward_head.weight [C], reward_head.bias [1].
  [[nodiscard]] const ParamLayout& layout() const { return layout_; }
  [[nodiscard]] std::size_t num_params() const { return layout_.size(); }
  [[nodiscard]] std::span<T> params() { return params_; }
  [[nodiscard]] std::span<const T> params() const { return params_; }
  /// The backbone's part of params(), laid out exactly as Net::layout() (load a policy here).
  [[nodiscard]] std::span<T> backbone_params() { return std::span<T>(params_).first(head_offset_); }

  // ---- scoring ------------------------------------------------------------------------------

  /// The row the reward reads for prompt + completion: all of it when it fits in max_seq_len,
  /// else the prompt's first M - c and the completion's last c tokens (the rule at the top).
  [[nodiscard]] std::vector<std::int32_t> window(std::span<const std::int32_t> prompt,
                                                 std::span<const std::int32_t> completion) const {
    const std::size_t M = static_cast<std::size_t>(config().max_seq_len), P = prompt.size(), K = completion.size();
    std::vector<std::int32_t> row;
    if (P + K <= M) {
      row.reserve(P + K);
      row.insert(row.end(), prompt.begin(), prompt.end());
      row.insert(row.end(), completion.begin(), completion.end());
      return row;
    }
    const std::size_t c = std::min(K, completion_budget(P)), p = M - c;  // p <= P because P + K > M
    row.reserve(M);
    row.insert(row.end(), prompt.begin(), prompt.begin() + static_cast<std::ptrdiff_t>(p));
    row.insert(row.end(), completion.end() - static_cast<std::ptrdiff_t>(c), completion.end());
    return row;
  }

  /// The row score(completion, sample) reads: window(prompt_tokens(sample), encode(completion)),
  /// tokenizing only the end of the completion that the window can keep.
  [[nodiscard]] std::vector<std::int32_t> tokens(std::string_view completion, const data::Problem& sample) const {
    const std::vector<std::int32_t> prompt = data::prompt_tokens(sample);
    const std::vector<std::int32_t> tail = detail::tail_tokens(completion, completion_budget(prompt.size()));
    return window(prompt, tail);
  }

  /// The reward of one completion (reward::Reward). Never throws; see the top of the file.
  [[nodiscard]] float score(std::string_view completion, const data::Problem& sample) const noexcept {
    try {
      const std::vector<std::int32_t> row = tokens(completion, sample);
      double r = 0;
      std::lock_guard<std::mutex> lock(*mutex_);
      run_rows(std::span<const std::vector<std::int32_t>>(&row, 1), std::span<double>(&r, 1));
      return to_score(r);
    } catch (...) {
      return 0.0f;
    }
  }

  /// out[i] = score(completions[i], samples[i]), options().score_rows rows per forward (each row
  /// padded to the longest of its chunk; equal to the single scores up to rounding).
  void score_batch(std::span<const std::string> completions, std::span<const data::Problem> samples,
                   std::span<float> out) const {
    REASON_CHECK(completions.size() == samples.size(), "RewardModel::score_batch: completions has ",
                 completions.size(), " items but samples has ", samples.size());
    REASON_CHECK(out.size() == completions.size(), "RewardModel::score_batch: out has ", out.size(),
                 " slots but completions has ", completions.size(), " items");
    const std::size_t chunk = static_cast<std::size_t>(options_.score_rows);
    std::vector<std::vector<std::int32_t>> rows;
    std::vector<double> r;
    for (std::size_t first = 0; first < completions.size(); first += chunk) {
      const std::size_t n = std::min(chunk, completions.size() - first);
      rows.clear();
      for (std::size_t i = 0; i < n; ++i) rows.push_back(tokens(completions[first + i], samples[first + i]));
      r.assign(n, 0.0);
      {
        std::lock_guard<std::mutex> lock(*mutex_);
        run_rows(rows, r);
      }
      for (std::size_t i = 0; i < n; ++i) out[first + i] = to_score(r[i]);
    }
  }

  /// Sets reward_head.bias so that the mean score of these completions is 0 (InstructGPT §3.5;
  /// e.g. reference completions before RL). Returns the mean before centring.
  double center(std::span<const std::string> completions, std::span<const data::Problem> samples) {
    REASON_CHECK(!completions.empty(), "RewardModel::center: completions: shape [0], expected at least one");
    std::vector<float> s(completions.size());
    score_batch(completions, samples, s);
    double mean = 0;
    for (float v : s) mean += static_cast<double>(v) / static_cast<double>(s.size());
    params_.back() = static_cast<T>(static_cast<double>(params_.back()) - mean);  // reward_head.bias
    return mean;
  }

  /// out[i] = r(rows[i]) for token rows of 1..max_seq_len ids (no window is applied here), in one
  /// forward padded to the longest row.
  void rewards(std::span<const std::vector<std::int32_t>> rows, std::span<double> out) const {
    REASON_CHECK(out.size() == rows.size(), "RewardModel::rewards: out has ", out.size(), " slots for ", rows.size(),
                 " rows");
    for (std::size_t i = 0; i < rows.size(); ++i) check_row(rows[i], "RewardModel::rewards: rows", i, "");
    if (rows.empty()) return;
    std::lock_guard<std::mutex> lock(*mutex_);
    run_rows(rows, out);
  }

  // ---- training on preference pairs ---------------------------------------------------------

  /// The Bradley-Terry loss and accuracy of `pairs` (no gradients).
  [[nodiscard]] PairStats evaluate(std::span<const PreferencePair> pairs) const {
    const std::vector<std::vector<std::int32_t>> rows = pair_rows(pairs, "RewardModel::evaluate");
    std::vector<double> r(rows.size());
    {
      std::lock_guard<std::mutex> lock(*mutex_);
      run_rows(rows, r);
    }
    return pair_terms(r, 0, {}, {});
  }

  /// One forward and backward over `pairs` (2P rows: the chosen rows, then the rejected):
  /// r_c, r_r at each row's last token, the mean Bradley-Terry loss (divided by `normaliser`
  /// pairs instead of P when it is > 0, for micro-batches of one step), d loss / d r pushed
  /// through the head into hidden_grad() at those positions, then backward(). grads [num_params]
  /// accumulate (+=), like Transformer's.
  PairStats accumulate_gradients(std::span<const PreferencePair> pairs, std::span<T> grads, index_t normaliser = 0) {
    REASON_CHECK(grads.size() == num_params(), "RewardModel::accumulate_gradients: grads: shape [", grads.size(),
                 "], expected [", num_params(), "]");
    REASON_CHECK(normaliser >= 0, "RewardModel::accumulate_gradients: normaliser = ", normaliser,
                 ", expected >= 0 (0: the number of pairs)");
    const std::vector<std::vector<std::int32_t>> rows = pair_rows(pairs, "RewardModel::accumulate_gradients");
    const index_t N = static_cast<index_t>(rows.size()), C = config().hidden_size;
    std::lock_guard<std::mutex> lock(*mutex_);
    std::vector<double> r(rows.size());
    const View<const T, 2> h = run_rows(rows, r, /*train=*/true);
    std::vector<double> dr(rows.size());
    const PairStats stats = pair_terms(r, normaliser, std::span<double>(dr).first(rows.size() / 2),
                                       std::span<double>(dr).subspan(rows.size() / 2));
    std::vector<T> dvalues(rows.size()), dh_last(static_cast<std::size_t>(N * C), T(0));
    for (std::size_t i = 0; i < rows.size(); ++i) dvalues[i] = static_cast<T>(dr[i]);
    const T* hp = params_.data() + head_offset_;
    head_.backward(hp, grads.data() + head_offset_, make_view(static_cast<const T*>(h_last_.data()), N, C),
                   make_view(static_cast<const T*>(dvalues.data()), N), make_view(dh_last.data(), N, C));
    const View<T, 2> dh = net_->hidden_grad();  // [N L, C], zeroed by forward_hidden(train)
    const index_t L = h.size(0) / N;
    for (index_t b = 0; b < N; ++b) {
      T* d = dh.row(b * L + last_[static_cast<std::size_t>(b)]);
      for (index_t c = 0; c < C; ++c) d[c] += dh_last[static_cast<std::size_t>(b * C + c)];
    }
    net_->backward(params_.data(), grads.data());
    return stats;
  }

 private:
  /// Completion tokens the window keeps at most beside a prompt of P tokens.
  [[nodiscard]] std::size_t completion_budget(std::size_t P) const {
    const std::size_t M = static_cast<std::size_t>(config().max_seq_len);
    return std::max(M > P ? M - P : std::size_t{0}, (M + 1) / 2);
  }

  static float to_score(double r) {
    if (std::isnan(r)) return 0.0f;
    constexpr double top = std::numeric_limits<float>::max();
    return static_cast<float>(std::clamp(r, -top, top));
  }

  void check_row(std::span<const std::int32_t> row, const char* what, std::size_t i, const char* field) const {
    const index_t M = config().max_seq_len, V = config().vocab_size;
    REASON_CHECK(!row.empty() && static_cast<index_t>(row.size()) <= M, what, "[", i, "]", field, ": shape [",
                 row.size(), "], expected 1 to max_seq_len = ", M, " tokens");
    for (std::size_t t = 0; t < row.size(); ++t)
      REASON_CHECK(row[t] >= 0 && row[t] < V, what, "[", i, "]", field, "[", t, "] = ", row[t],
                   " is outside the vocabulary [0, ", V, ")");
  }

  /// Rows 0..P-1: window(prompt, chosen); rows P..2P-1: window(prompt, rejected).
  std::vector<std::vector<std::int32_t>> pair_rows(std::span<const PreferencePair> pairs, const char* fn) const {
    REASON_CHECK(!pairs.empty(), fn, ": pairs: shape [0], expected at least one preference pair");
    std::vector<std::vector<std::int32_t>> rows(2 * pairs.size());
    for (std::size_t i = 0; i < pairs.size(); ++i) {
      const PreferencePair& p = pairs[i];
      const index_t V = config().vocab_size;
      auto check_ids = [&](const std::vector<std::int32_t>& ids, const char* field) {
        for (std::size_t t = 0; t < ids.size(); ++t)
          REASON_CHECK(ids[t] >= 0 && ids[t] < V, fn, ": pairs[", i, "].", field, "[", t, "] = ", ids[t],
                       " is outside the vocabulary [0, ", V, ")");
      };
      check_ids(p.prompt, "prompt");
      check_ids(p.chosen, "chosen");
      check_ids(p.rejected, "rejected");
      REASON_CHECK(!p.prompt.empty() || (!p.chosen.empty() && !p.rejected.empty()), fn, ": pairs[", i,
                   "]: prompt: shape [0] with a completion of shape [0]; a row needs at least one token");
      rows[i] = window(p.prompt, p.chosen);
      rows[pairs.size() + i] = window(p.prompt, p.rejected);
    }
    return rows;
  }

  /// Bradley-Terry over r = [chosen rows, rejected rows]; writes d loss / d r when given slots.
  static PairStats pair_terms(std::span<const double> r, index_t normaliser, std::span<double> d_chosen,
                              std::span<double> d_rejected) {
    const std::size_t P = r.size() / 2;
    const std::span<const double> rc = r.first(P), rr = r.subspan(P);
    std::vector<double> dc(P), drj(P);
    PairStats s;
    s.pairs = static_cast<index_t>(P);
    const double scale = normaliser > 0 ? static_cast<double>(P) / static_cast<double>(normaliser) : 1.0;
    s.loss = scale * bradley_terry_mean(rc, rr, dc, drj);
    for (std::size_t i = 0; i < P; ++i) {
      s.accuracy += rc[i] > rr[i] ? 1.0 / static_cast<double>(P) : 0.0;
      s.mean_margin += (rc[i] - rr[i]) / static_cast<double>(P);
      if (!d_chosen.empty()) {
        d_chosen[i] = scale * dc[i];
        d_rejected[i] = scale * drj[i];
      }
    }
    return s;
  }

  /// Pads `rows` into tokens_ [B, L] with <pad>, runs the trunk, reads h at each row's last
  /// token into h_last_ [B, C] and out[b] = head(h_last_[b]). Returns the final hidden states.
  /// The caller holds mutex_.
  View<const T, 2> run_rows(std::span<const std::vector<std::int32_t>> rows, std::span<double> out,
                            bool train = false) const {
    const index_t B = static_cast<index_t>(rows.size()), C = config().hidden_size;
    std::size_t L = 1;
    for (const auto& row : rows) L = std::max(L, row.size());
    tokens_.assign(rows.size() * L, data::Tokenizer::pad);
    last_.resize(rows.size());
    for (std::size_t b = 0; b < rows.size(); ++b) {
      std::copy(rows[b].begin(), rows[b].end(), tokens_.begin() + static_cast<std::ptrdiff_t>(b * L));
      last_[b] = static_cast<index_t>(rows[b].size()) - 1;
    }
    const index_t Li = static_cast<index_t>(L);
    net_->reserve(B, Li);  // grows the arena only when this batch is the largest yet
    const View<const T, 2> h =
        net_->forward_hidden(params_.data(), make_view(static_cast<const std::int32_t*>(tokens_.data()), B, Li), train);
    h_last_.resize(static_cast<std::size_t>(B * C));
    for (index_t b = 0; b < B; ++b)
      std::copy_n(h.row(b * Li + last_[static_cast<std::size_t>(b)]), C, h_last_.data() + b * C);
    values_.resize(rows.size());
    head_.forward(params_.data() + head_offset_, make_view(static_cast<const T*>(h_last_.data()), B, C),
                  make_view(values_.data(), B));
    for (std::size_t b = 0; b < rows.size(); ++b) out[b] = static_cast<double>(values_[b]);
    return h;
  }

  std::unique_ptr<Net> net_;  // the workspace (activation arena) behind the const functions
  ValueHead<T> head_;         // the head's arithmetic; its parameters live at params_[head_offset_]
  RewardModelOptions options_;
  ParamLayout layout_;
  std::size_t head_offset_ = 0;
  std::vector<T> params_;
  std::unique_ptr<std::mutex> mutex_ = std::make_unique<std::mutex>();  // guards net_ and the scratch below
  mutable std::vector<std::int32_t> tokens_;  // [B, L] the padded rows of the last forward
  mutable std::vector<index_t> last_;         // [B] each row's last position
  mutable std::vector<T> h_last_;             // [B, C] final hidden state there
  mutable std::vector<T> values_;             // [B] the head's output
};

/// What one optimizer step on preference pairs did.
struct RewardStepStats {
  PairStats pairs;
  double grad_norm = 0;      // before clipping
  std::int64_t update = 0;   // the optimizer's t for this step (1-based)
};

/// Owns the gradients and optimizer state of a RewardModel (held by reference) and takes steps:
/// zero grads, accumulate_gradients, clip to max_grad_norm, opt.step(layout, params, grads,
/// state, lr, t). A step whose gradient is not finite changes nothing and throws.
template <class Net, class Opt = optim::AdamW>
class RewardModelTrainer {
  static_assert(optim::Optimizer<Opt>, "rl::RewardModelTrainer<Net, Opt>: Opt must be an optimizer policy (e.g. optim::AdamW)");

 public:
  using T = typename RewardModel<Net>::T;

  explicit RewardModelTrainer(RewardModel<Net>& model, Opt optimizer = {}, double max_grad_norm = 1.0)
      : model_(&model), opt_(std::move(optimizer)), max_grad_norm_(max_grad_norm),
        grads_(model.num_params(), T(0)),
        state_(model.num_params() * static_cast<std::size_t>(Opt::state_slots), T(0)) {}

  RewardStepStats step(std::span<const PreferencePair> pairs, double lr) {
    std::fill(grads_.begin(), grads_.end(), T(0));
    RewardStepStats s;
    s.pairs = model_->accumulate_gradients(pairs, grads_);
    s.grad_norm = train::clip_grad_norm<T>(grads_, max_grad_norm_);
    REASON_CHECK(std::isfinite(s.grad_norm), "RewardModelTrainer::step: the gradient norm is ", s.grad_norm,
                 "; no update made (loss ", s.pairs.loss, ")");
    s.update = ++updates_;
    opt_.template step<T>(model_->layout(), model_->params(), grads_, state_, lr, updates_);
    return s;
  }

  [[nodiscard]] RewardModel<Net>& model() const { return *model_; }
  [[nodiscard]] const Opt& optimizer() const { return opt_; }
  [[nodiscard]] std::span<T> grads() { return grads_; }
  [[nodiscard]] std::span<T> optimizer_state() { return state_; }
  [[nodiscard]] std::int64_t updates() const { return updates_; }
  /// Restores the optimizer's step count (a checkpoint loader sets the state through optimizer_state()).
  void set_updates(std::int64_t t) {
    REASON_CHECK(t >= 0, "RewardModelTrainer::set_updates: ", t, " is negative");
    updates_ = t;
  }

 private:
  RewardModel<Net>* model_;
  Opt opt_;
  double max_grad_norm_;
  std::vector<T> grads_;  // [num_params]
  std::vector<T> state_;  // [state_slots * num_params]
  std::int64_t updates_ = 0;
};

}  // namespace reason::rl
