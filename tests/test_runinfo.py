"""Run names, the short parameter list and the description that MLflow shows for an evaluation."""

from typing import Iterable

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from analysis.curves import DELTA_SUFFIX
from jobs.cli import compose
from jobs.config import resolved
from tracking import runinfo


def config(*overrides: str) -> dict:
    return resolved(compose("run_dir=x", *overrides))


def run_name(config: dict, overrides: Iterable[tuple[str, str]] = ()) -> str:
    """The run's name against conf/'s defaults, as the jobs name it."""
    return runinfo.run_name(config, resolved(compose()), overrides)


def test_a_name_holds_model_dataset_prompt_the_temperature_and_only_the_settings_that_differ_from_conf():
    assert run_name(config()) == "qwen2.5-coder-0.5b-instruct/arith/cot t0.7"
    assert run_name(config("dataset=gsm8k", "sampling.n=32", "answer.top_percent=50")) == (
        "qwen2.5-coder-0.5b-instruct/gsm8k/cot t0.7 n32 top50")  # gsm8k's own answer format is its default
    assert run_name(config("dataset=gsm8k", "answer.format=math", "sampling=greedy")) == (
        "qwen2.5-coder-0.5b-instruct/gsm8k/cot t0.0 p1.0 n1 math")
    assert run_name(config("answer.seed=3")) == "qwen2.5-coder-0.5b-instruct/arith/cot t0.7 aseed3"
    assert run_name(config("adaptive=esc"), [("adaptive", "esc")]) == (  # online stopping, named once
        "qwen2.5-coder-0.5b-instruct/arith/cot t0.7 adaptive=esc")
    assert run_name(config("decoding=cot_decoding", "prompt=plain")) == (  # n, t and top_p do not apply
        "qwen2.5-coder-0.5b-instruct/arith/plain cot_decoding b10")


def test_sweep_members_get_unique_names_that_carry_their_overrides_even_at_defaults():
    swept = OverridesParser.create().parse_overrides(
        ["prompt=direct,cot", "sampling.top_p=0.95,0.9", "dataset.limit=4,8", "run_dir=runs/${prompt.name}"])
    [members] = BasicSweeper.split_arguments(swept, max_batch_size=None)
    names = []
    for member in members:
        pairs = [(o.key_or_group, str(o.value())) for o in OverridesParser.create().parse_overrides(member)]
        names.append(run_name(config(*member), pairs))
    assert len(set(names)) == len(members) == 8
    assert "qwen2.5-coder-0.5b-instruct/arith/direct t0.7 p0.95 dataset.limit=4" in names  # p0.95 is the default
    assert not [name for name in names if "run_dir" in name]


def test_params_are_the_keys_users_filter_on_and_only_those_that_apply():
    params = runinfo.params(config("sampling.n=4"), {"problems": 3.0, "samples": 12.0, "tokens/total": 9.0},
                            {"adaptive": "beta", "adaptive.budget": None})
    assert set(params) == {"model.name", "model.path", "dataset.name", "prompt.name", "decoding", "sampling.n",
                           "sampling.temperature", "sampling.top_p", "sampling.max_tokens", "sampling.seed",
                           "sampling.logprobs", "answer.format", "answer.confidence", "answer.seed", "problems", "samples",
                           "adaptive", "git_commit"}
    assert params["problems"] == 3 and params["sampling.n"] == 4 and len(params["git_commit"].split("-")[0]) == 40
    cot = runinfo.params(config("decoding=cot_decoding", "prompt=plain"), {})
    assert "sampling.top_k_branches" in cot and "sampling.temperature" not in cot and "sampling.n" not in cot


def test_the_description_gives_the_headline_at_the_largest_k_and_says_what_is_missing():
    curves = [{"method": m, "k": k, "accuracy": a, "ci_low": a - 0.1, "ci_high": a + 0.1}
              for m, a4 in (("maj", 0.5), ("pass", 0.75)) for k, a in ((1, 0.25), (4, a4))]
    curves.append({"method": "maj" + DELTA_SUFFIX, "k": 4, "accuracy": 0.125, "ci_low": -0.05, "ci_high": 0.3})
    metrics = {"accuracy/greedy": 0.375, "tokens/per_problem": 1234.4, "problems": 8.0, "samples": 32.0}
    text = runinfo.description("m/d/p t0.7", curves, metrics, {"weighted_maj": "no logprobs"}, DELTA_SUFFIX)
    assert text.splitlines() == [
        "**m/d/p t0.7**", "",
        "- greedy: 37.5%",
        "- maj@4: 50.0% (95% CI 40.0%–60.0%)",
        "- pass@4: 75.0% (95% CI 65.0%–85.0%)",
        "- maj@4 − greedy: +12.5 points, paired 95% CI [-5.0, +30.0]",
        "- tokens per problem: 1,234",
        "- 8 problems, 32 samples",
        "- not reported: weighted_maj: no logprobs",
    ]
