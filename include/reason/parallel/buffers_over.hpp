// reason/parallel/buffers_over.hpp — BuffersOver<Base>: the pass-through part of a parallelism
// policy's trainer buffers.
//
// A policy's buffers (DataParallelBuffers, ModelParallelBuffers, ...) wrap the model's own
// (train_buffers_t: HostTrainBuffers or a CUDA model's device buffers) and change only what talks to
// the other ranks — the clip, the step's scalars, sometimes the construction. Everything else a
// trainer calls (train/train_buffers.hpp lists it) is the model's buffers' own, forwarded here once.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

namespace reason::parallel {

template <class Base>
class BuffersOver {
 public:
  using T = std::remove_pointer_t<decltype(std::declval<Base&>().params())>;

  explicit BuffersOver(Base base) : base_(std::move(base)) {}

  [[nodiscard]] T* params() { return base_.params(); }
  [[nodiscard]] const T* params() const { return base_.params(); }
  [[nodiscard]] T* grads() { return base_.grads(); }
  [[nodiscard]] const T* reference() const { return base_.reference(); }
  void zero_grads() { base_.zero_grads(); }
  template <class Opt>
  void step(const Opt& opt, double lr, std::int64_t t) {
    base_.step(opt, lr, t);
  }
  void reset_reference() { base_.reset_reference(); }

  [[nodiscard]] auto host_params() { return base_.host_params(); }
  [[nodiscard]] auto host_params() const { return base_.host_params(); }
  [[nodiscard]] auto host_grads() { return base_.host_grads(); }
  [[nodiscard]] auto host_grads() const { return base_.host_grads(); }
  [[nodiscard]] auto host_reference() { return base_.host_reference(); }
  [[nodiscard]] auto host_reference() const { return base_.host_reference(); }
  [[nodiscard]] auto host_state() { return base_.host_state(); }
  [[nodiscard]] auto host_state() const { return base_.host_state(); }
  void to_host() const { base_.to_host(); }
  void from_host() { base_.from_host(); }

 protected:
  Base base_;
};

}  // namespace reason::parallel
