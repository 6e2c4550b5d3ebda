"""Prompt styles: chat and completion rendering, and few-shot exemplars from the train split."""

from pathlib import Path

import pytest

from jobs.problems import Problem, load_problems
from jobs.prompts import exemplars, render, worked_answer
from tests.test_config import make

PROBLEM = Problem("p1", "I have 3 apples and my dad has 2 more than me. How many do we have together?", "8")


def test_cot_chat_prompt_asks_for_steps():
    messages = render(make("prompt=cot").prompt, PROBLEM)
    assert messages[-1]["role"] == "user"
    assert PROBLEM.question in messages[-1]["content"] and "step by step" in messages[-1]["content"]


def test_direct_prompt_asks_for_the_answer_only():
    content = render(make("prompt=direct").prompt, PROBLEM)[-1]["content"]
    assert "step by step" not in content and "final answer" in content


def test_completion_style_is_a_plain_string():
    text = render(make("prompt=cot", "prompt.chat=false").prompt, PROBLEM)
    assert text == f"Q: {PROBLEM.question}\nA: Let's think step by step."


def test_system_message_is_included_when_set():
    messages = render(make("prompt=cot", "prompt.system=Be brief.").prompt, PROBLEM)
    assert messages[0] == {"role": "system", "content": "Be brief."}


def test_gsm8k_worked_answer_drops_calculator_notes_and_ends_with_the_answer():
    shot = Problem("t", "q", "72", "Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72")
    assert worked_answer(shot) == "Natalia sold 48/2 = 24 clips.\nThe answer is 72."


def test_few_shot_exemplars_are_deterministic_and_from_train():
    cfg = make("dataset=arith")
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
