"""Prompts from conf/prompt/: a chat conversation or a plain completion string per problem."""

from __future__ import annotations

import random
import re

from omegaconf import DictConfig

from actors.work import Prompt
from analysis.errors import ConfigError
from problems.datasets import GSM8K_GOLD, Problem


def exemplars(train: list[Problem], shots: int, seed: int) -> list[Problem]:
    """`shots` worked examples drawn from a train split, the same for the same seed."""
    usable = [p for p in train if p.solution]
    if len(usable) < shots:
        raise ConfigError(f"prompt.shots={shots}: the train split has only {len(usable)} problems with solutions")
    return random.Random(seed).sample(usable, shots)


def worked_answer(problem: Problem) -> str:
    """A train problem's solution, ending with the sentence the prompts ask for."""
    solution = re.sub(rf"\n?{GSM8K_GOLD}", "", problem.solution or "").strip()  # GSM8K's final line
    solution = re.sub(r"<<[^>]*>>", "", solution)  # GSM8K's calculator annotations
    if f"The answer is {problem.gold}" in solution:
        return solution
    return f"{solution}\nThe answer is {problem.gold}."


def render(cfg: DictConfig, problem: Problem, shots: list[Problem] = ()) -> Prompt:
    """The prompt for one problem: chat messages when `cfg.chat`, else a completion string."""
    if cfg.chat:
        messages = [{"role": "system", "content": cfg.system}] if cfg.system else []
        for shot in shots:
            messages.append({"role": "user", "content": cfg.user.format(question=shot.question)})
            messages.append({"role": "assistant", "content": worked_answer(shot)})
        messages.append({"role": "user", "content": cfg.user.format(question=problem.question)})
        return messages
    examples = "".join(f"{cfg.completion.format(question=s.question)} {worked_answer(s)}\n\n" for s in shots)
    prefix = f"{cfg.system}\n\n" if cfg.system else ""
    return prefix + examples + cfg.completion.format(question=problem.question)
