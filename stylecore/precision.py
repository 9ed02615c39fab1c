"""Which precision the network runs in: the policy behind `--precision auto`.

Chosen from measurements (docs/precision.md, "Where auto picks bf16"): bf16
autocast for the network wherever the hardware is fast at it (CUDA GPUs with bf16;
CPUs with AMX or AVX512-BF16), fp32 elsewhere. The losses stay fp32 either way, and
Gram matrices are summed in fp32 (on a CPU, those of bf16 activations in bf16
blocks: losses._Gram), and L-BFGS rejects the runaway steps bf16's noisier gradients
can cause (lbfgs.py).
"""

from __future__ import annotations

import torch


def cpu_has_fast_bf16() -> bool:
    """AMX or AVX512-BF16: bf16 convolutions are faster than fp32 (measured 2.5-5x
    with AMX on an Intel Xeon, 1.5x with AVX512-BF16 on an AMD EPYC). Without them
    oneDNN emulates bf16, far slower than fp32 (100x on an AVX2-only AMD EPYC)."""
    cpu = getattr(torch, "cpu", None)
    amx = getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    avx512_bf16 = getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
    return bool(amx or avx512_bf16)


def bf16_is_fast(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_fast_bf16()


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """precision: auto, fp32 or bf16 (StyleParams.precision) -> the network's dtype on `device`."""
    return dtype_for(precision, torch.bfloat16 if precision == "auto" and bf16_is_fast(device) else torch.float32)


def dtype_for(precision: str, auto: torch.dtype) -> torch.dtype:
    """precision -> the network's dtype, where `auto` is what "auto" resolves to (a
    server's admission knows it from its workers' device without touching the device)."""
    return {"fp32": torch.float32, "bf16": torch.bfloat16}.get(precision, auto)
