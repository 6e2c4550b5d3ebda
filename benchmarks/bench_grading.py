"""Benchmark: how often marginal's grading agrees with a task's own exact-match grading, on released samples.

    python -m benchmarks.bench_grading FILE.jsonl [FILE.jsonl ...] [--fmt auto] [--show 5]

Each line of a file is one graded sample: `gold`, `correct` (the task's own verdict), `extracted` (the
answer the task's own extraction read) and optionally `text` (the model's whole output) and `question`
(its options serve ``choice``). Per file it prints the samples, how often our verdict on the task's own
extracted answer agrees with the task's ("grader"), how often our verdict from extracting the text
ourselves agrees ("end to end", when texts are there), and how many anagrams of the gold (a different
order of the same letters) each of the two graded right: it must be 0/0. `--show N` prints N
disagreements per file.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from analysis.answers import ANSWER_FORMATS, canonicalize, extract_answer, grade
from analysis.words import question_options


def verdict(answer: Optional[str], row: dict[str, Any], fmt: str) -> bool:
    """Our grade of one answer against the row's gold (options from its question, if any)."""
    options = question_options(row["question"]) if row.get("question") else None
    return grade(canonicalize(answer, fmt, options), row["gold"], fmt, options)


def is_anagram(answer: Optional[str], gold: str) -> bool:
    """Whether an answer holds the gold's letters in another order (case and non-letters ignored)."""
    mine, theirs = ([ch for ch in (s or "").lower() if ch.isalpha()] for s in (answer, gold))
    return bool(theirs) and mine != theirs and sorted(mine) == sorted(theirs)


def agreement(rows: list[dict[str, Any]], fmt: str) -> dict[str, Any]:
    """Agreement counts of one file's rows, and its disagreements as (how, row, our verdict, our answer)."""
    counts = Counter(grader=0, texts=0, end_to_end=0, anagrams=0, anagrams_end_to_end=0)
    disagreements = []
    for row in rows:
        ours = verdict(row["extracted"], row, fmt)
        counts["grader"] += ours == row["correct"]
        counts["anagrams"] += ours and is_anagram(row["extracted"], row["gold"])
        if ours != row["correct"]:
            disagreements.append(("grader", row, ours, row["extracted"]))
        if row.get("text") is not None:
            answer = extract_answer(row["text"], fmt)
            ours = verdict(answer, row, fmt)
            counts["texts"] += 1
            counts["end_to_end"] += ours == row["correct"]
            counts["anagrams_end_to_end"] += ours and is_anagram(answer, row["gold"])
            if ours != row["correct"]:
                disagreements.append(("end to end", row, ours, answer))
    return {"samples": len(rows), **counts, "disagreements": disagreements}


def percent(part: int, whole: int) -> str:
    """`part` of `whole` as a percentage, or '-' when there is nothing to count."""
    return f"{100 * part / whole:.2f}%" if whole else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--fmt", default="auto", choices=ANSWER_FORMATS)
    parser.add_argument("--show", type=int, default=0, help="disagreements to print per file")
    args = parser.parse_args()
    print(f"format {args.fmt}")
    print(f"{'file':<44}{'samples':>8}{'grader':>10}{'end to end':>12}{'anagrams right':>16}")
    print(f"{'':<44}{'':>8}{'':>10}{'':>12}{'(grader/e2e)':>16}")
    total: Counter = Counter()
    for path in args.files:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        result = agreement(rows, args.fmt)
        total.update({k: v for k, v in result.items() if k != "disagreements"})
        print(f"{path.stem:<44}{result['samples']:>8}{percent(result['grader'], result['samples']):>10}"
              f"{percent(result['end_to_end'], result['texts']):>12}"
              f"{str(result['anagrams']) + '/' + str(result['anagrams_end_to_end']):>16}")
        for how, row, ours, answer in result["disagreements"][: args.show]:
            print(f"    {how}: ours {'right' if ours else 'wrong'}, task {'right' if row['correct'] else 'wrong'}: "
                  f"answer {answer!r}, task's {row['extracted']!r}, gold {row['gold']!r}")
    print(f"{'all':<44}{total['samples']:>8}{percent(total['grader'], total['samples']):>10}"
          f"{percent(total['end_to_end'], total['texts']):>12}"
          f"{str(total['anagrams']) + '/' + str(total['anagrams_end_to_end']):>16}")


if __name__ == "__main__":
    main()
