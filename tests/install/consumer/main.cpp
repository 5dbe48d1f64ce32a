// Trains a tiny model for a few steps, writes and reads a checkpoint: the whole stack from outside.
#include <reason/reason.hpp>

#include <cstdio>
#include <filesystem>

int main() {
  using namespace reason;
  using Net = model::Transformer<attention::MultiHead<attention::Shape{.head_dim = 8}>, ffn::SwiGLU>;
  model::Config c;
  c.vocab_size = 20;
  c.hidden_size = 16;
  c.num_layers = 1;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.intermediate_size = 24;
  c.max_seq_len = 8;
  Net net(c);
  train::TrainConfig tc;
  tc.total_steps = 3;
  tc.batch = 2;
  tc.seq = 8;
  tc.schedule.warmup_steps = 1;
  tc.schedule.total_steps = 3;
  train::Trainer<Net, optim::AdamW> trainer(net, optim::AdamW{}, tc);
  const train::BatchSource source = [](std::int64_t step, int, train::TokenBatch& b) {
    b.resize(2, 8);
    for (std::size_t i = 0; i < b.tokens.size(); ++i) {
      b.tokens[i] = static_cast<std::int32_t>((i + step) % 20);
      b.targets[i] = static_cast<std::int32_t>((i + step + 1) % 20);
    }
  };
  double loss = 0;
  while (!trainer.done()) loss = trainer.run_step(source).loss;
  const auto path = std::filesystem::temp_directory_path() / "reason_consumer.safetensors";
  train::save_checkpoint(path, trainer);
  train::load_checkpoint(path, trainer);
  std::filesystem::remove(path);
  std::printf("consumer: %zu parameters, loss %.4f\n", net.num_params(), loss);
  return loss > 0 && loss < 10 ? 0 : 1;
}
