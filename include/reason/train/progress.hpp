// reason/train/progress.hpp — human-readable training progress.
//
// On a terminal, one live line rewritten in place (\r) each step; otherwise (a log file, CI)
// whole plain lines every `every` steps, so logs stay greppable and never hold half a line.
// Rates are over the whole run so far (tokens/s) and the ETA extrapolates the mean step time.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace reason::train {

class Progress {
 public:
  Progress(std::int64_t total_steps, std::int64_t every, std::FILE* out = stdout)
      : total_(total_steps), every_(every < 1 ? 1 : every), out_(out), live_(::isatty(::fileno(out)) != 0),
        start_(Clock::now()) {}

  /// Seconds since construction (or the last restart()).
  [[nodiscard]] double elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  /// Starts the clock again (e.g. after resuming) counting from `first_step`.
  void restart(std::int64_t first_step) {
    start_ = Clock::now();
    first_ = first_step;
    tokens_ = 0;
  }

  /// Reports a finished step; `tokens` counts the tokens processed in it.
  void step(std::int64_t step, double loss, double lr, std::int64_t tokens, const std::string& extra = "") {
    tokens_ += tokens;
    const double t = elapsed();
    const double rate = t > 0 ? static_cast<double>(tokens_) / t : 0.0;
    const std::int64_t done = step + 1 - first_;
    const double eta = done > 0 ? t / static_cast<double>(done) * static_cast<double>(total_ - step - 1) : 0.0;
    const bool last = step + 1 == total_;
    if (!live_ && (step + 1) % every_ != 0 && !last) return;
    char line[256];
    std::snprintf(line, sizeof line, "step %6lld/%lld  loss %.4f  lr %.2e  %7.0f tok/s  elapsed %s  eta %s%s%s",
                  static_cast<long long>(step + 1), static_cast<long long>(total_), loss, lr, rate,
                  clock_text(t).c_str(), clock_text(eta).c_str(), extra.empty() ? "" : "  ", extra.c_str());
    if (live_) {
      std::fprintf(out_, "\r\033[2K%s%s", line, last ? "\n" : "");
    } else {
      std::fprintf(out_, "%s\n", line);
    }
    std::fflush(out_);
  }

  /// Prints a whole line (ending the live line first).
  void line(const std::string& text) {
    std::fprintf(out_, "%s%s\n", live_ ? "\r\033[2K" : "", text.c_str());
    std::fflush(out_);
  }

  [[nodiscard]] double tokens_per_second() const {
    const double t = elapsed();
    return t > 0 ? static_cast<double>(tokens_) / t : 0.0;
  }

 private:
  using Clock = std::chrono::steady_clock;
  static std::string clock_text(double seconds) {
    const auto s = static_cast<long long>(seconds + 0.5);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
    return buf;
  }

  std::int64_t total_, every_;
  std::FILE* out_;
  bool live_;
  Clock::time_point start_;
  std::int64_t first_ = 0, tokens_ = 0;
};

}  // namespace reason::train
