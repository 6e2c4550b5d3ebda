"""Prompt styles: chat and completion rendering, and few-shot exemplars from the train split."""

import pytest

from analysis.errors import ConfigError
from jobs.cli import compose
from jobs.config import validate
from problems.datasets import Problem, load_problems
from problems.prompts import exemplars, render, worked_answer

PROBLEM = Problem("p1", "I have 3 apples and my dad has 2 more than me. How many do we have together?", "8")


def test_cot_chat_prompt_asks_for_steps():
    messages = render(compose("prompt=cot").prompt, PROBLEM)
    assert messages[-1]["role"] == "user"
    assert PROBLEM.question in messages[-1]["content"] and "step by step" in messages[-1]["content"]


def test_direct_prompt_asks_for_the_answer_only():
    content = render(compose("prompt=direct").prompt, PROBLEM)[-1]["content"]
    assert "step by step" not in content and "final answer" in content


def test_completion_style_is_a_plain_string():
    text = render(compose("prompt=cot", "prompt.chat=false").prompt, PROBLEM)
    assert text == f"Q: {PROBLEM.question}\nA: Let's think step by step."


def test_system_message_is_included_when_set():
    messages = render(compose("prompt=cot", "prompt.system=Be brief.").prompt, PROBLEM)
    assert messages[0] == {"role": "system", "content": "Be brief."}


def test_gsm8k_worked_answer_drops_calculator_notes_and_ends_with_the_answer():
    shot = Problem("t", "q", "72", "Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72")
    assert worked_answer(shot) == "Natalia sold 48/2 = 24 clips.\nThe answer is 72."


def test_few_shot_exemplars_are_deterministic_and_from_train():
    cfg = compose("dataset=arith")
    train, test = load_problems(cfg.dataset, split="train"), load_problems(cfg.dataset)
    shots = exemplars(train, 3, seed=0)
    assert shots == exemplars(train, 3, seed=0) and shots != exemplars(train, 3, seed=1)
    assert not {s.question for s in shots} & {p.question for p in test}
    messages = render(cfg.prompt, test[0], shots)
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3 + ["user"]
    assert messages[1]["content"].endswith(f"The answer is {shots[0].gold}.")


def test_too_few_exemplars_is_an_error():
    with pytest.raises(ValueError, match="prompt.shots=5"):
        exemplars([PROBLEM], 5, seed=0)


STYLE_CUES = {"cot": "step by step", "few_shot_cot": "step by step", "analogical": "related problem", "step_back": "principle"}


@pytest.mark.parametrize("style", sorted(STYLE_CUES))
def test_every_style_renders_as_chat_and_as_completion(style):
    cfg = compose(f"prompt={style}", "prompt.shots=0")
    content = render(cfg.prompt, PROBLEM)[-1]["content"]
    assert PROBLEM.question in content and STYLE_CUES[style] in content
    text = render(compose(f"prompt={style}", "prompt.shots=0", "prompt.chat=false").prompt, PROBLEM)
    assert isinstance(text, str) and text.startswith(f"Q: {PROBLEM.question}\nA:")


def gsm8k_few_shot(*overrides: str):
    from jobs.sample import prepare_problems

    cfg = compose("prompt=few_shot_cot", "dataset=gsm8k", "dataset.limit=3", *overrides)
    validate(cfg)
    return cfg, *prepare_problems(cfg)


def test_few_shot_cot_draws_four_train_exemplars_by_seed():
    cfg, problems, prompts = gsm8k_few_shot()
    messages = prompts[problems[0].problem_id]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 4 + ["user"]
    assert messages[-1]["content"].startswith(problems[0].question)
    train = {p.question for p in load_problems(cfg.dataset, split="train")}
    test = {p.question for p in load_problems(compose("dataset=gsm8k").dataset)}
    shown = {m["content"].split("\nLet's think")[0] for m in messages[:-1:2]}
    assert shown <= train and not shown & test
    assert all(m["content"].endswith(".") and "The answer is" in m["content"] for m in messages[1:-1:2])
    assert prompts == gsm8k_few_shot()[2]  # the same seed, the same exemplars
    assert messages[:-1] != gsm8k_few_shot("prompt.shots_seed=1")[2][problems[0].problem_id][:-1]
    assert all(p[:-1] == messages[:-1] for p in prompts.values())  # every problem sees the same exemplars


def test_few_shot_cot_as_completion_lists_worked_questions_then_the_problem():
    _, problems, prompts = gsm8k_few_shot("prompt.chat=false")
    text = prompts[problems[0].problem_id]
    assert text.count("Q: ") == 5 and text.count("The answer is") == 4
    assert text.endswith(f"Q: {problems[0].question}\nA:")


@pytest.mark.parametrize("dataset", ["math500", "svamp"])
def test_few_shot_without_a_train_split_fails_naming_the_key(dataset):
    with pytest.raises(ConfigError, match=r"^dataset.train_path=None: prompt=few_shot_cot needs exemplars from a train split"):
        validate(compose("prompt=few_shot_cot", f"dataset={dataset}"))
