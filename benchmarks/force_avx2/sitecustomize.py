"""Put this folder on PYTHONPATH, with ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2, to run PyTorch and vLLM's
CPU kernels as on an AVX2-only machine: the checks vLLM picks its kernels by say no to AVX-512, its BF16 and AMX.
It exercises that code path on any x86 machine; it does not reproduce an AVX2-only CPU's speed."""

import torch.cpu

for _name in ("_is_avx512_supported", "_is_avx512_bf16_supported", "_is_amx_tile_supported", "_is_amx_fp16_supported",
              "_is_avx512_vnni_supported", "_is_vnni_supported"):
    if hasattr(torch.cpu, _name):
        setattr(torch.cpu, _name, lambda: False)
