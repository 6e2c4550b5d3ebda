"""The engine's dtype: `model.dtype: auto` resolved on the machine that builds the engine.

On CPU, bf16 matmul runs natively only with AVX-512 BF16 or AMX; elsewhere PyTorch emulates it, 44-499x
slower than fp32 (pytorch/pytorch#146508), so `auto` is bfloat16 there and float32 everywhere else. On a GPU,
`auto` is the model's own dtype (vLLM's `auto`). The ISA is read the way vLLM picks its CPU kernels
(`torch.cpu._is_avx512_supported` and friends), so a machine forced onto the AVX2 kernels resolves as one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

AUTO = "auto"
DTYPES = (AUTO, "bfloat16", "float16", "float32")  # model.dtype's values
ISAS = ("other", "avx2", "avx512", "avx512_bf16", "amx")  # the CPU's best instruction set, weakest first
NATIVE_BF16 = ("avx512_bf16", "amx")


@dataclass(frozen=True)
class Precision:
    """What the replica runs: the dtype vLLM is given, the CPU's ISA (on any device), and a warning if slow."""

    dtype: str  # on GPU with `auto`: "auto" until the engine reports the model's own dtype
    isa: str
    warning: Optional[str] = None


def resolve_dtype(requested: str, isa: str, on_gpu: bool) -> Precision:
    """The dtype for `model.dtype=requested` on a CPU of `isa` (one of ISAS) or a GPU, with a warning line when
    an explicit bfloat16 will run emulated on this CPU."""
    if on_gpu:
        return Precision(requested, isa)
    native = isa in NATIVE_BF16
    if requested == AUTO:
        return Precision("bfloat16" if native else "float32", isa)
    warning = None
    if requested == "bfloat16" and not native:
        warning = (f"model.dtype=bfloat16 on a CPU without avx512_bf16 or AMX (best ISA: {isa}): bf16 is emulated "
                   f"there and many times slower than float32; set model.dtype=auto (or float32)")
    return Precision(requested, isa, warning)


def cpu_isa() -> str:
    """This CPU's best ISA of ISAS, as PyTorch and vLLM's CPU kernels see it."""
    import torch

    checks = (("amx", torch.cpu._is_amx_tile_supported), ("avx512_bf16", torch.cpu._is_avx512_bf16_supported),
              ("avx512", torch.cpu._is_avx512_supported), ("avx2", torch.cpu._is_avx2_supported))
    return next((name for name, supported in checks if supported()), "other")


def engine_precision(requested: str) -> Precision:
    """`resolve_dtype` on this machine: a GPU if PyTorch sees one, else this CPU."""
    import torch

    return resolve_dtype(requested, cpu_isa(), torch.cuda.is_available())


def resolved_engine_kwargs(engine_kwargs: dict[str, Any]) -> tuple[dict[str, Any], Precision]:
    """vLLM's arguments with their dtype (default auto) resolved on this machine, and the resolution."""
    precision = engine_precision(engine_kwargs.get("dtype", AUTO))
    return {**engine_kwargs, "dtype": precision.dtype}, precision
