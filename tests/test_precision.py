"""model.dtype=auto: the decision from the CPU's ISA, its record in config.yaml and MLflow's params, and the real
engine under the forced-AVX2 set-up (benchmarks/force_avx2)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from actors.precision import ISAS, cpu_isa, resolve_dtype
from analysis.errors import ConfigError
from jobs.cli import compose
from jobs.config import validate
from storage import rundir
from tracking import runinfo

ROOT = Path(__file__).resolve().parents[1]
FORCE_AVX2 = ROOT / "benchmarks" / "force_avx2"


@pytest.mark.parametrize("isa, expected", [("other", "float32"), ("avx2", "float32"), ("avx512", "float32"),
                                           ("avx512_bf16", "bfloat16"), ("amx", "bfloat16")])
def test_auto_is_bfloat16_only_where_the_cpu_has_native_bf16(isa, expected):
    precision = resolve_dtype("auto", isa, on_gpu=False)
    assert (precision.dtype, precision.isa, precision.warning) == (expected, isa, None)


@pytest.mark.parametrize("isa", ISAS)
def test_an_explicit_dtype_is_kept_and_bfloat16_without_native_bf16_warns_once_with_the_fix(isa):
    assert resolve_dtype("float32", isa, on_gpu=False).warning is None
    bf16 = resolve_dtype("bfloat16", isa, on_gpu=False)
    assert bf16.dtype == "bfloat16"
    if isa in ("avx512_bf16", "amx"):
        assert bf16.warning is None
    else:
        assert f"best ISA: {isa}" in bf16.warning and "model.dtype=auto" in bf16.warning and "\n" not in bf16.warning


def test_on_a_gpu_auto_is_left_to_vllm_the_models_own_dtype():
    assert resolve_dtype("auto", "avx2", on_gpu=True).dtype == "auto"
    assert resolve_dtype("bfloat16", "avx2", on_gpu=True).warning is None


@pytest.mark.parametrize("flags, expected", [
    ({"amx": True, "bf16": True, "avx512": True, "avx2": True}, "amx"),
    ({"amx": False, "bf16": True, "avx512": True, "avx2": True}, "avx512_bf16"),
    ({"amx": False, "bf16": False, "avx512": True, "avx2": True}, "avx512"),
    ({"amx": False, "bf16": False, "avx512": False, "avx2": True}, "avx2"),
    ({"amx": False, "bf16": False, "avx512": False, "avx2": False}, "other"),
])
def test_the_isa_is_read_from_the_checks_vllm_picks_its_kernels_by(monkeypatch, flags, expected):
    for name, flag in (("_is_amx_tile_supported", "amx"), ("_is_avx512_bf16_supported", "bf16"),
                       ("_is_avx512_supported", "avx512"), ("_is_avx2_supported", "avx2")):
        monkeypatch.setattr(torch.cpu, name, lambda value=flags[flag]: value)
    assert cpu_isa() == expected


def test_the_forced_avx2_set_up_resolves_auto_to_float32():
    env = {**os.environ, "PYTHONPATH": str(FORCE_AVX2), "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run([sys.executable, "-c", "from actors.precision import engine_precision as e; "
                          "p = e('auto'); print(p.isa, p.dtype)"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["avx2", "float32"]


def test_the_embedded_models_default_to_auto_and_an_unknown_dtype_is_refused():
    for model in ("qwen2_5_coder_0_5b", "qwen2_5_coder_1_5b", "smollm2_135m"):
        assert compose(f"model={model}").model.dtype == "auto"
    with pytest.raises(ConfigError, match=r"model.dtype='bf16': must be one of"):
        validate(compose("model.dtype=bf16"))


def test_config_yaml_records_every_dtype_and_isa_the_replicas_ran_and_keeps_them_on_resume(tmp_path):
    run_dir = str(tmp_path / "run")
    config = {"model": {"name": "m", "dtype": "auto"}, "sampling": {"n": 4}}
    run_id = rundir.prepare(run_dir, config)
    rundir.record_precision(run_dir, {"dtype": "bfloat16", "isa": "avx512_bf16"})
    assert rundir.saved_config(run_dir)["precision"] == {"dtype": "bfloat16", "isa": "avx512_bf16"}
    # resumed on an AVX2 machine, with the dtype now explicit: the same run, and both machines on record
    assert rundir.prepare(run_dir, {**config, "model": {"name": "m", "dtype": "float32"}}) == run_id
    rundir.record_precision(run_dir, {"dtype": "float32", "isa": "avx2"})
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["precision"] == {"dtype": "bfloat16,float32", "isa": "avx2,avx512_bf16"}
    assert saved["model"]["dtype"] == "float32"
    params = runinfo.params(saved, {})
    assert (params["precision.dtype"], params["precision.isa"]) == ("bfloat16,float32", "avx2,avx512_bf16")


@pytest.mark.engine
def test_the_real_engine_under_forced_avx2_runs_auto_as_float32_and_warns_for_bfloat16(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(FORCE_AVX2), "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    for dtype, expected in (("auto", "float32"), ("bfloat16", "bfloat16")):
        run = tmp_path / dtype
        job = subprocess.run([sys.executable, "-m", "jobs.sample", f"run_dir={run}", "model=smollm2_135m", "dataset.limit=2",
                              "sampling=greedy", "sampling.max_tokens=16", "tracking=none", f"model.dtype={dtype}"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert job.returncode == 0, job.stderr[-3000:]
        assert f"dtype {expected} (model.dtype={dtype}), CPU avx2" in job.stderr
        warnings = [line for line in job.stderr.splitlines() if "bf16 is emulated" in line]
        assert len(warnings) == (dtype == "bfloat16")
        assert rundir.saved_config(str(run))["precision"] == {"dtype": expected, "isa": "avx2"}
