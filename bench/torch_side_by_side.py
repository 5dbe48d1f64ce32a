#!/usr/bin/env python3
"""reason's GPU benchmarks side by side with PyTorch, on one GPU, in one Markdown table.

Run on the GPU machine (no network needed; only PyTorch and the standard library):

    python3 bench/torch_side_by_side.py --bin-dir build/bench --out side_by_side.json

It
  (a) runs every bench_cuda_* executable in --bin-dir (Google Benchmark, GPU time from CUDA events,
      --benchmark_out JSON, median of --repetitions); bench_cuda_train only for its case
      train_step/gpt2_small/B:8/T:1024 (counter tokens/s); a missing executable gives "—";
  (b) times the PyTorch equivalents of the same cases on the same GPU with torch.cuda.Event (warm-up,
      then the median of --samples spans; a span repeats the call until it lasts >= --min-span-ms,
      as the C++ side does): SDPA with the flash backend forced, forward and backward alone
      (autograd.grad with the graph retained); matmul / F.linear with separate bias and activation;
      AdamW(fused=True) and (foreach=True); tensor.copy_;
  (c) times a training step of a GPT-2-small-sized dense decoder in PyTorch eager written to match
      reason's architecture (pre-norm RMSNorm, fused qkv without bias, RoPE rotate_half, causal
      SDPA, o projection, SwiGLU with fused gate_up [2F, C] and down, final RMSNorm, untied LM head,
      cross-entropy; bf16 autocast over fp32 master weights, gradient clipping to norm 1, fused AdamW);
  (d) prints one Markdown table, case | reason | PyTorch | reason/PyTorch, the ratio of the two
      rates (> 1: reason is faster), under the GPU's name and the versions, and writes everything
      (both sides' times, rates, the raw Google Benchmark JSON, the environment) to --out.

Pairing: every case has a key. The C++ benchmark name (without Google Benchmark's /manual_time)
is the key of reason's figure; PyTorch's figure for the same row is measured here on tensors of the
same shapes, dtypes and memory layout. Rates are computed here, from the median times, with one
formula per row for both sides (FLOPs as FlashAttention counts them, 2MNK, compulsory bytes).
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

# ---- the cases --------------------------------------------------------------------------------

TOKENS = 16384
ATTN_SHAPES = [(TOKENS // T, T, H, D) for T in (1024, 4096, 16384) for (H, D) in ((16, 128), (32, 64))]
GEMM_SHAPES = [  # (M, N, K, label)
    (8192, 3072, 768, "GPT-2 c_fc"),
    (8192, 768, 3072, "GPT-2 c_proj"),
    (8192, 2304, 768, "GPT-2 c_attn"),
    (2048, 384, 128, "small"),
    (2048, 128, 384, "small"),
    (2048, 256, 128, "small"),
]
# (our epilogue path, how PyTorch computes the same thing, what the row says)
GEMM_VARIANTS = [
    ("fused/none", "no epilogue vs matmul"),
    ("fused/bias", "bias fused vs F.linear"),
    ("unfused/bias", "GEMM then bias kernel vs matmul + b"),
    ("fused/relu_bias", "bias+ReLU fused vs relu(F.linear)"),
    ("unfused/relu_bias", "GEMM then bias+ReLU kernel vs relu(matmul + b)"),
    ("fused/gelu_bias", "bias+GELU fused vs gelu(F.linear)"),
    ("unfused/gelu_bias", "GEMM then bias+GELU kernel vs gelu(matmul + b)"),
]
ADAMW_N = 124_000_000
ADAMW_SHAPE = (124, ADAMW_N // 124)
COPY_BYTES = 14 * ADAMW_N
TRAIN = dict(B=8, T=1024, C=768, L=12, H=12, D=64, F=2048, V=50304)
TRAIN_KEY = "train_step/gpt2_small/B:8/T:1024"


def attn_key(kind, B, T, H, D):
    return f"flash_attention_{kind}/bf16/B:{B}/T:{T}/H:{H}/Hkv:{H}/D:{D}/causal"


def gemm_key(variant, M, N, K):
    return f"gemm/bf16/{variant}/M:{M}/N:{N}/K:{K}"


def adamw_key(grad, acc):
    return f"adamw/grad:{grad}/acc:{acc}/N:{ADAMW_N}"


COPY_KEY = f"copy/d2d/bytes:{COPY_BYTES}"
TORCH_ADAMW_FUSED = f"torch/adamw/fused/N:{ADAMW_N}"
TORCH_ADAMW_FOREACH = f"torch/adamw/foreach/N:{ADAMW_N}"


def rows():
    """Every row of the table: label, unit, work per call (FLOPs, bytes or tokens), the two keys."""
    out = []
    for kind in ("fwd", "bwd"):
        for B, T, H, D in ATTN_SHAPES:
            fwd = 4.0 * B * H * T * T * D / 2.0  # causal
            out.append(dict(section="attention", unit="TFLOP/s", work=fwd * (2.5 if kind == "bwd" else 1.0),
                            case=f"flash attention {kind} B{B} T{T} H{H} D{D} causal",
                            ours=attn_key(kind, B, T, H, D), torch=attn_key(kind, B, T, H, D)))
    for M, N, K, label in GEMM_SHAPES:
        for variant, what in GEMM_VARIANTS:
            out.append(dict(section="gemm", unit="TFLOP/s", work=2.0 * M * N * K,
                            case=f"GEMM {M}x{N}x{K} ({label}) {what}",
                            ours=gemm_key(variant, M, N, K), torch=gemm_key(variant, M, N, K)))
    b28, b26 = 28.0 * ADAMW_N, 26.0 * ADAMW_N
    out += [
        dict(section="adamw", unit="GB/s", work=b28, case="AdamW 124M fp32 grads: reason Acc=float vs torch fused",
             ours=adamw_key("fp32", "float"), torch=TORCH_ADAMW_FUSED),
        dict(section="adamw", unit="GB/s", work=b28, case="AdamW 124M fp32 grads: reason Acc=double vs torch fused",
             ours=adamw_key("fp32", "double"), torch=TORCH_ADAMW_FUSED),
        dict(section="adamw", unit="GB/s", work=b28, case="AdamW 124M fp32 grads: reason Acc=float vs torch foreach",
             ours=adamw_key("fp32", "float"), torch=TORCH_ADAMW_FOREACH),
        dict(section="adamw", unit="GB/s", work=b26, case="AdamW 124M bf16 grads, Acc=float (torch: n/a)",
             ours=adamw_key("bf16", "float"), torch=None),
        dict(section="adamw", unit="GB/s", work=b26, case="AdamW 124M bf16 grads, Acc=double (torch: n/a)",
             ours=adamw_key("bf16", "double"), torch=None),
        dict(section="adamw", unit="GB/s", work=2.0 * COPY_BYTES,
             case=f"copy d2d {COPY_BYTES / 1e9:.3g} GB (read + write): cudaMemcpyAsync vs copy_",
             ours=COPY_KEY, torch=COPY_KEY),
        dict(section="train", unit="tokens/s", work=float(TRAIN["B"] * TRAIN["T"]),
             case="train step GPT-2 small (124M-class, 12x768, F 2048, vocab 50304) B8 T1024",
             ours=TRAIN_KEY, torch=TRAIN_KEY),
    ]
    return out


# ---- reason's side: the Google Benchmark executables ------------------------------------------

_UNIT_S = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
_BASE_FIELDS = {"name", "run_name", "run_type", "repetitions", "repetition_index", "threads", "iterations",
                "real_time", "cpu_time", "time_unit", "family_index", "per_family_instance_index",
                "aggregate_name", "aggregate_unit", "error_occurred", "error_message", "label"}


def case_key(name):
    """A Google Benchmark name without its /manual_time, /real_time, /iterations:n suffixes."""
    name = re.sub(r"_(mean|median|stddev|cv)$", "", name)
    parts = [p for p in name.split("/") if p not in ("manual_time", "real_time", "process_time")
             and not re.fullmatch(r"(iterations|repeats|threads|min_time):[0-9.]+s?", p)]
    return "/".join(parts)


def load_benchmark_json(path):
    """Google Benchmark's JSON; a file cut short by a crash is read up to its last whole case."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return json.loads(text), False
    except json.JSONDecodeError:
        pass
    cut = text.rfind("\n    }")  # the end of the last complete entry of "benchmarks"
    while cut > 0:
        try:
            return json.loads(text[:cut + 6] + "\n  ]\n}\n"), True
        except json.JSONDecodeError:
            cut = text.rfind("\n    }", 0, cut)
    return {"benchmarks": []}, True


def parse_ours(data):
    """key -> {time_s, counters} (the median over repetitions where there are several) or {error}."""
    out = {}
    for b in data.get("benchmarks", []):
        key = case_key(b.get("run_name") or b.get("name", ""))
        agg = b.get("aggregate_name")
        if b.get("error_occurred"):
            out.setdefault(key, {"error": b.get("error_message", "error")})
            continue
        if b.get("run_type") == "aggregate" and agg != "median":
            continue
        if key in out and out[key].get("median") and agg != "median":
            continue  # a repetition does not replace the median
        t = float(b["real_time"]) * _UNIT_S.get(b.get("time_unit", "ns"), 1e-9)
        counters = {k: v for k, v in b.items() if k not in _BASE_FIELDS and isinstance(v, (int, float))}
        out[key] = {"time_s": t, "counters": counters, "median": agg == "median", "iterations": b.get("iterations")}
    return out


def run_ours(args, workdir):
    """Runs each bench_cuda_* in --bin-dir; returns (results by key, raw JSON by executable, notes)."""
    results, raw, notes = {}, {}, []
    exes = sorted(p for p in glob.glob(os.path.join(args.bin_dir, "bench_cuda_*"))
                  if os.path.isfile(p) and os.access(p, os.X_OK))
    if not exes:
        notes.append(f"no bench_cuda_* executable in {args.bin_dir}")
    env = dict(os.environ)
    if args.lib_dir:
        env["LD_LIBRARY_PATH"] = args.lib_dir + (os.pathsep + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    for exe in exes:
        name = os.path.basename(exe)
        out_json = os.path.join(workdir, name + ".json")
        cmd = [exe, f"--benchmark_out={out_json}", "--benchmark_out_format=json",
               f"--benchmark_repetitions={args.repetitions}", "--benchmark_report_aggregates_only=true"]
        if args.min_time is not None:
            cmd.append(f"--benchmark_min_time={args.min_time}")
        flt = args.filter
        if name == "bench_cuda_train":
            if args.skip_train:
                continue
            flt = "^" + TRAIN_KEY + "(/|$)"  # its one case the table uses
        if flt:
            cmd.append(f"--benchmark_filter={flt}")
        print(f"\n### {' '.join(cmd)}", flush=True)
        try:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert proc.stdout is not None
            for line in proc.stdout:
                print(line, end="", flush=True)
            rc = proc.wait(timeout=args.timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            notes.append(f"{name}: {e}")
            rc = -1
        if rc == 77:
            notes.append(f"{name}: exit 77 (no usable GPU; see its message above)")
        elif rc != 0:
            notes.append(f"{name}: exit status {rc}")
        if os.path.exists(out_json):
            data, cut = load_benchmark_json(out_json)
            if cut:
                notes.append(f"{name}: its JSON was cut short (crash?); read up to the last whole case")
            raw[name] = data
            results.update(parse_ours(data))
    return results, raw, notes


# ---- PyTorch's side ----------------------------------------------------------------------------

def cuda_time(torch, fn, args, samples=None):
    """Median seconds per call of fn() on the current stream, from torch.cuda.Event pairs."""
    samples = samples or args.samples
    for _ in range(args.warmup):
        fn()
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    stop.record()
    stop.synchronize()
    once = max(start.elapsed_time(stop), 1e-4)
    inner = int(min(1000, max(1, math.ceil(args.min_span_ms / once))))
    times = []
    for _ in range(samples):
        start.record()
        for _ in range(inner):
            fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) * 1e-3 / inner)
    return {"time_s": statistics.median(times), "samples_s": times, "inner": inner}


def guarded(results, key, make):
    """results[key] = make(), or the error it raised (one failing case does not end the run)."""
    try:
        results[key] = make()
    except Exception as e:  # noqa: BLE001 - reported in the table and the JSON
        results[key] = {"error": f"{type(e).__name__}: {e}"}
        print(f"torch {key}: {results[key]['error']}", flush=True)


def torch_attention(torch, args, results, wanted):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    bf16 = torch.bfloat16
    for B, T, H, D in ATTN_SHAPES:
        keys = {k: attn_key(k, B, T, H, D) for k in ("fwd", "bwd")}
        if not any(wanted(k) for k in keys.values()):
            continue

        def uniform(*shape):
            return torch.empty(*shape, device="cuda", dtype=bf16).uniform_(-1, 1)

        # [B, T, H, D] buffers seen as [B, H, T, D]: the memory layout of reason's views.
        q, k, v = uniform(B, T, H, D), uniform(B, T, H, D), uniform(B, T, H, D)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            if wanted(keys["fwd"]):
                def fwd():
                    with torch.no_grad():
                        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                              v.transpose(1, 2), is_causal=True)
                guarded(results, keys["fwd"], lambda: cuda_time(torch, fwd, args))
            if wanted(keys["bwd"]):
                def make_bwd():
                    qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
                    out = F.scaled_dot_product_attention(qg.transpose(1, 2), kg.transpose(1, 2), vg.transpose(1, 2),
                                                         is_causal=True)
                    dout = torch.empty_like(out).uniform_(-1, 1)
                    r = cuda_time(torch, lambda: torch.autograd.grad(out, (qg, kg, vg), dout, retain_graph=True), args)
                    del out
                    return r
                guarded(results, keys["bwd"], make_bwd)
        del q, k, v
        torch.cuda.empty_cache()


def torch_gemm(torch, args, results, wanted):
    import torch.nn.functional as F
    bf16 = torch.bfloat16
    for M, N, K, _ in GEMM_SHAPES:
        if not any(wanted(gemm_key(v, M, N, K)) for v, _ in GEMM_VARIANTS):
            continue
        x = torch.empty(M, K, device="cuda", dtype=bf16).uniform_(-1, 1)
        w = torch.empty(N, K, device="cuda", dtype=bf16).uniform_(-1, 1)
        b = torch.empty(N, device="cuda", dtype=bf16).uniform_(-1, 1)
        fns = {
            "fused/none": lambda: torch.matmul(x, w.t()),
            "fused/bias": lambda: F.linear(x, w, b),
            "unfused/bias": lambda: torch.matmul(x, w.t()) + b,
            "fused/relu_bias": lambda: F.relu(F.linear(x, w, b)),
            "unfused/relu_bias": lambda: torch.relu(torch.matmul(x, w.t()) + b),
            "fused/gelu_bias": lambda: F.gelu(F.linear(x, w, b), approximate="tanh"),
            "unfused/gelu_bias": lambda: F.gelu(torch.matmul(x, w.t()) + b, approximate="tanh"),
        }
        with torch.no_grad():
            for variant, _ in GEMM_VARIANTS:
                key = gemm_key(variant, M, N, K)
                if wanted(key):
                    guarded(results, key, lambda fn=fns[variant]: cuda_time(torch, fn, args))
        del x, w, b


def torch_adamw_copy(torch, args, results, wanted):
    for key, kind in ((TORCH_ADAMW_FUSED, "fused"), (TORCH_ADAMW_FOREACH, "foreach")):
        if not wanted(key):
            continue

        def make(kind=kind):
            p = torch.nn.Parameter(torch.empty(*ADAMW_SHAPE, device="cuda").uniform_(-1, 1))
            p.grad = torch.empty_like(p).uniform_(-1, 1)
            opt = torch.optim.AdamW([p], lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
                                    **{kind: True})
            r = cuda_time(torch, opt.step, args)
            del opt, p
            torch.cuda.empty_cache()
            return r
        guarded(results, key, make)
    if wanted(COPY_KEY):
        def make_copy():
            src = torch.empty(COPY_BYTES, device="cuda", dtype=torch.uint8).random_(0, 256)
            dst = torch.empty_like(src)
            r = cuda_time(torch, lambda: dst.copy_(src), args)
            del src, dst
            torch.cuda.empty_cache()
            return r
        guarded(results, COPY_KEY, make_copy)


def build_gpt(torch, cfg):
    """The GPT-2-small-sized dense decoder, laid out as reason's model::Transformer."""
    nn, F = torch.nn, torch.nn.functional
    C, L, H, D, Fh, V = cfg["C"], cfg["L"], cfg["H"], cfg["D"], cfg["F"], cfg["V"]

    class ManualRMSNorm(nn.Module):  # only for a PyTorch without nn.RMSNorm (< 2.4)
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(C))

        def forward(self, x):
            xf = x.float()
            return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(x.dtype) * self.weight

    def rms_norm():
        return nn.RMSNorm(C, eps=1e-5) if hasattr(nn, "RMSNorm") else ManualRMSNorm()

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn_norm, self.ffn_norm = rms_norm(), rms_norm()
            self.qkv = nn.Linear(C, 3 * H * D, bias=False)
            self.o = nn.Linear(H * D, C, bias=False)
            self.gate_up = nn.Linear(C, 2 * Fh, bias=False)  # [2F, C]: gate rows, then up rows
            self.down = nn.Linear(Fh, C, bias=False)

        def forward(self, x, cos, sin):
            B, T, _ = x.shape
            q, k, v = self.qkv(self.attn_norm(x)).view(B, T, 3, H, D).unbind(2)
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
            x = x + self.o(y.transpose(1, 2).reshape(B, T, H * D))
            g, u = self.gate_up(self.ffn_norm(x)).chunk(2, dim=-1)
            return x + self.down(F.silu(g) * u)

    def rope(x, cos, sin):  # rotate_half pairing (i, i + D/2), as kernels/rope.hpp
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(V, C)
            self.layers = nn.ModuleList(Block() for _ in range(L))
            self.norm = rms_norm()
            self.lm_head = nn.Linear(C, V, bias=False)  # untied
            inv = 1.0 / (10000.0 ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
            ang = torch.outer(torch.arange(cfg["T"], dtype=torch.float64), inv)
            ang = torch.cat((ang, ang), dim=-1)  # [T, D]: plane i at i and i + D/2
            self.register_buffer("cos", ang.cos()[None, :, None, :].float(), persistent=False)
            self.register_buffer("sin", ang.sin()[None, :, None, :].float(), persistent=False)
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    std = 0.02 / math.sqrt(2 * L) if name.endswith(("o.weight", "down.weight")) else 0.02
                    nn.init.normal_(p, std=std)

        def forward(self, tokens, targets):
            T = tokens.shape[1]
            x = self.embed(tokens)
            cos = self.cos[:, :T].to(torch.bfloat16)  # q, k come out of the autocast linear in bf16
            sin = self.sin[:, :T].to(torch.bfloat16)
            for layer in self.layers:
                x = layer(x, cos, sin)
            logits = self.lm_head(self.norm(x))
            return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))

    return GPT()


def torch_train(torch, args):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    cfg = TRAIN
    model = build_gpt(torch, cfg).cuda()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=3e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    gen = torch.Generator(device="cuda").manual_seed(1)
    data = torch.randint(0, cfg["V"], (cfg["B"], cfg["T"] + 1), device="cuda", generator=gen)
    tokens, targets = data[:, :-1].contiguous(), data[:, 1:].contiguous()

    def step():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(tokens, targets)
        loss.backward()
        if not args.train_no_clip:
            torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    saved = args.min_span_ms
    args.min_span_ms = 0.0  # one step per sample
    try:
        r = cuda_time(torch, step, args, samples=args.train_steps)
    finally:
        args.min_span_ms = saved
    r["params"] = sum(p.numel() for p in params)
    r["clip"] = not args.train_no_clip
    del model, opt, params, groups
    torch.cuda.empty_cache()
    return r


def run_torch(args):
    try:
        import torch
    except ImportError as e:
        raise SystemExit(f"torch_side_by_side: PyTorch is not importable here ({e}); --skip-torch runs reason's side alone")
    if not torch.cuda.is_available():
        raise SystemExit("torch_side_by_side: PyTorch sees no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    # fp32 accumulation all the way, as gpu::CublasLtGemm (no bf16 reductions in split-K)
    try:
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    except (AttributeError, AssertionError):  # a PyTorch without the switch
        pass
    results = {}

    def wanted(key):
        return not args.filter or re.search(args.filter, key) is not None

    sections = [("attention", lambda: torch_attention(torch, args, results, wanted)),
                ("gemm", lambda: torch_gemm(torch, args, results, wanted)),
                ("adamw and copy", lambda: torch_adamw_copy(torch, args, results, wanted))]
    if not args.skip_train and wanted(TRAIN_KEY):
        sections.append(("train", lambda: guarded(results, TRAIN_KEY, lambda: torch_train(torch, args))))
    for name, fn in sections:
        print(f"\n### PyTorch: {name}", flush=True)
        fn()
    return results


def environment(ours_raw):
    env = {"date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "python": platform.python_version(), "host": platform.node()}
    try:
        import torch
        env.update(torch=torch.__version__, torch_cuda=torch.version.cuda,
                   cudnn=str(torch.backends.cudnn.version()))
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            env.update(gpu=torch.cuda.get_device_name(0), compute_capability=f"{p.major}.{p.minor}",
                       multiprocessors=p.multi_processor_count, gpu_memory_gib=round(p.total_memory / 2**30, 1))
    except ImportError:
        env["torch"] = None
    except Exception as e:  # noqa: BLE001 - the environment must never cost the table
        env["torch_error"] = f"{type(e).__name__}: {e}"
    if shutil.which("nvidia-smi"):
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
    for name, data in ours_raw.items():
        ctx = data.get("context", {})
        env.setdefault("gpu", ctx.get("gpu"))

        def ver(v):
            return f"{int(v) // 1000}.{int(v) % 1000 // 10}" if str(v).isdigit() else v
        env[f"reason_{name}"] = {k: (ver(ctx[k]) if k in ("cuda_runtime", "cuda_driver") else ctx[k])
                                 for k in ("cuda_runtime", "cuda_driver", "cuda_architectures", "library_build_type",
                                           "date") if k in ctx}
    return env


# ---- the table ---------------------------------------------------------------------------------

def rate(row, res):
    if not res or "time_s" not in res or not res["time_s"]:
        return None
    if row["unit"] == "tokens/s" and "tokens/s" in res.get("counters", {}):
        return float(res["counters"]["tokens/s"])
    scale = {"TFLOP/s": 1e12, "GB/s": 1e9, "tokens/s": 1.0}[row["unit"]]
    return row["work"] / res["time_s"] / scale


def fmt(v):
    if v is None:
        return "—"
    if v >= 10000:
        return f"{v:,.0f}"
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def cell(row, res, v):
    if v is not None:
        return fmt(v)
    if res and "error" in res:
        return "error"
    return "—"


def table(rows_, ours, theirs, env):
    ours_builds = "; ".join(f"{k[7:]}: CUDA runtime {v.get('cuda_runtime', '?')}, driver API {v.get('cuda_driver', '?')}, "
                            f"architectures {v.get('cuda_architectures', '?')}"
                            for k, v in env.items() if k.startswith("reason_") and isinstance(v, dict) and v)
    lines = [f"GPU: {env.get('gpu', '?')} (compute capability {env.get('compute_capability', '?')}, "
             f"{env.get('multiprocessors', '?')} SMs, {env.get('gpu_memory_gib', '?')} GiB), driver {env.get('driver', '?')}",
             f"PyTorch {env.get('torch') or '—'} (CUDA {env.get('torch_cuda', '?')}, cuDNN {env.get('cudnn', '?')}), "
             f"Python {env.get('python')}; {env['date_utc']}",
             f"reason: {ours_builds or '—'}",
             "",
             "| case | reason | PyTorch | reason/PyTorch |",
             "|---|---:|---:|---:|"]
    for row in rows_:
        o = ours.get(row["ours"]) if row["ours"] else None
        t = theirs.get(row["torch"]) if row["torch"] else None
        ro, rt = rate(row, o), rate(row, t)
        row["reason_rate"], row["torch_rate"] = ro, rt
        row["reason_time_s"] = o.get("time_s") if o else None
        row["torch_time_s"] = t.get("time_s") if t else None
        ratio = f"{ro / rt:.2f}" if ro and rt else "—"
        lines.append(f"| {row['case']} [{row['unit']}] | {cell(row, o, ro)} | {cell(row, t, rt)} | {ratio} |")
    lines.append("")
    lines.append("Rates from median GPU times (CUDA events on both sides); reason/PyTorch is the ratio of rates "
                 "(> 1: reason faster). Attention FLOPs as FlashAttention counts them (causal: 2 B H T^2 D forward, "
                 "2.5x that backward); GEMM 2MNK; AdamW and copy: compulsory bytes (read + write).")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin"),
                    help="folder with the bench_cuda_* executables (default: bin/ beside this script)")
    ap.add_argument("--lib-dir", default="",
                    help="prepended to LD_LIBRARY_PATH for reason's executables only (':'-separated)")
    ap.add_argument("--out", default="side_by_side.json", help="combined figures, JSON")
    ap.add_argument("--md", default="", help="also write the table to this Markdown file")
    ap.add_argument("--workdir", default="", help="where reason's raw JSON files go (default: a temporary folder)")
    ap.add_argument("--filter", default="", help="regex on case keys, both sides (e.g. '^gemm/')")
    ap.add_argument("--repetitions", type=int, default=3, help="Google Benchmark repetitions (median taken)")
    ap.add_argument("--min-time", type=float, default=None, help="--benchmark_min_time for reason's executables")
    ap.add_argument("--samples", type=int, default=15, help="PyTorch: timed spans per case (median taken)")
    ap.add_argument("--warmup", type=int, default=3, help="PyTorch: untimed calls before timing")
    ap.add_argument("--min-span-ms", type=float, default=1.0, help="PyTorch: shortest timed span (calls repeated)")
    ap.add_argument("--train-steps", type=int, default=10, help="PyTorch: timed training steps (median taken)")
    ap.add_argument("--train-no-clip", action="store_true", help="PyTorch train step without gradient clipping")
    ap.add_argument("--skip-ours", action="store_true")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-train", action="store_true", help="neither side's training step")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 1 repetition, --min-time 0.05, 3 samples, 3 train steps")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per reason executable")
    args = ap.parse_args(argv)
    if args.quick:
        args.repetitions, args.samples, args.train_steps = 1, 3, 3
        args.min_time = 0.05 if args.min_time is None else args.min_time

    workdir = args.workdir or tempfile.mkdtemp(prefix="reason-bench-")
    os.makedirs(workdir, exist_ok=True)
    ours, ours_raw, notes = ({}, {}, []) if args.skip_ours else run_ours(args, workdir)
    theirs, failed = {}, False
    if not args.skip_torch:
        try:
            theirs = run_torch(args)
        except SystemExit as e:  # no PyTorch or no GPU for it: still report reason's side
            print(e, file=sys.stderr, flush=True)
            notes.append(str(e))
            failed = True
    notes += [f"reason {k}: {v['error']}" for k, v in ours.items() if "error" in v]
    notes += [f"PyTorch {k}: {v['error']}" for k, v in theirs.items() if "error" in v]
    env = environment(ours_raw)
    rows_ = rows()
    if args.filter:
        rows_ = [r for r in rows_ if any(k and re.search(args.filter, k) for k in (r["ours"], r["torch"]))]
    md = table(rows_, ours, theirs, env)
    if notes:
        md += "\n\nNotes:\n" + "\n".join(f"- {n}" for n in notes)
    print("\n" + md, flush=True)
    combined = {"environment": env, "rows": rows_, "reason": ours, "torch": theirs, "notes": notes,
                "reason_raw": ours_raw, "args": vars(args)}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(combined, f, indent=1)
    if args.md:
        with open(args.md, "w", encoding="utf-8") as f:
            f.write(md + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
