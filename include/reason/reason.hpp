// reason/reason.hpp — everything in one include, for people who want one line.
// Parts that need a component's library are included when that library is found:
// io/, data/problem_json.hpp and train/checkpoint.hpp need nlohmann-json (reason::io).
#pragma once

#include "reason/core/arena.hpp"
#include "reason/core/dtype.hpp"
#include "reason/core/error.hpp"
#include "reason/core/parallel.hpp"
#include "reason/core/param_layout.hpp"
#include "reason/core/philox.hpp"
#include "reason/core/view.hpp"

#include "reason/kernels/adamw.hpp"
#include "reason/kernels/attention.hpp"
#include "reason/kernels/cross_entropy.hpp"
#include "reason/kernels/embedding.hpp"
#include "reason/kernels/gemm.hpp"
#include "reason/kernels/linear.hpp"
#include "reason/kernels/lm_head.hpp"
#include "reason/kernels/reduce.hpp"
#include "reason/kernels/residual.hpp"
#include "reason/kernels/rmsnorm.hpp"
#include "reason/kernels/rope.hpp"
#include "reason/kernels/sgd.hpp"
#include "reason/kernels/swiglu.hpp"

#include "reason/attention/multi_head.hpp"
#include "reason/ffn/swiglu.hpp"
#include "reason/linear/dense.hpp"
#include "reason/norm/rmsnorm.hpp"
#include "reason/optim/adamw.hpp"
#include "reason/optim/sgd.hpp"
#include "reason/precision/precision.hpp"

#include "reason/data/arithmetic.hpp"
#include "reason/data/curriculum.hpp"
#include "reason/data/held_out.hpp"
#include "reason/data/sft_batch.hpp"
#include "reason/data/tokenizer.hpp"

#include "reason/model/transformer.hpp"
#include "reason/infer/greedy.hpp"
#include "reason/infer/rollout.hpp"
#include "reason/infer/sampler.hpp"
#include "reason/train/progress.hpp"
#include "reason/train/schedule.hpp"
#include "reason/train/trainer.hpp"

#if __has_include(<nlohmann/json.hpp>)
#include "reason/data/problem_json.hpp"
#include "reason/io/atomic_file.hpp"
#include "reason/io/jsonl.hpp"
#include "reason/io/safetensors.hpp"
#include "reason/train/checkpoint.hpp"
#endif
