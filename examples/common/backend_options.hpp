// examples/common/backend_options.hpp — the --device and --precision options both examples take.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

namespace examples {

/// --device cpu|cuda (`device_help` says what runs on the GPU) and --precision fp32|bf16|fp16.
inline void add_backend_options(CLI::App& app, std::string& device, std::string& precision, const char* device_help) {
  app.add_option("--device", device, device_help)->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  app.add_option("--precision", precision,
                 "with --device cuda: fp32, or bf16 / fp16 compute with fp32 master weights (fp16: dynamic loss "
                 "scaling)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}))
      ->capture_default_str();
}

}  // namespace examples
