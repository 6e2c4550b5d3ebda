"""Answers that are words: normalized text keys, yes/no keys, option letters and a question's options.

These keys are plain strings built with linear-time regular expressions; nothing here does algebra,
so two different words never compare equal (``snta`` is not ``snat``, ``melon`` is not ``lemon``).
"""

from __future__ import annotations

import re
from functools import lru_cache
from types import MappingProxyType
from typing import Mapping

QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb"
ARTICLES = ("a", "an", "the")

_WRAPPERS = re.compile(rf"^[\s{QUOTES}*]+|[\s{QUOTES}*]+$")
_SURROUNDING = QUOTES + "*_.,;:!?()[]{}<> \t\n"
LATEX_TEXT = re.compile(r"\\(?:text|textrm|textbf|textit|mbox|mathrm|mathbf)\{([^{}]*)\}")
_WORD_RUN = re.compile(r"[^\W\d_]{2,}")  # two or more letters in a row: a word, never a product of variables
_NOT_WORDS = re.compile(r"[\d\\]")  # a digit or a LaTeX macro makes it math
_SPELLED = re.compile(r"^[^\W\d_](?:-[^\W\d_]){2,}$")  # letters spelled out with hyphens: h-e-e-o
_HEDGE = (
    r"(?:(?:most\s+|very\s+)?(?:likely|probably|definitely|certainly|clearly|technically|typically)"
    r"(?:\s+to\s+be)?[\s,:]+)?"
)
_BOOLEAN = re.compile(rf"^{_HEDGE}[{QUOTES}*]*(yes|no|true|false)[{QUOTES}*]*(?=$|[ \t]*\n|\s*[,.;:!)\-\u2013\u2014])", re.IGNORECASE)
_BOOLEAN_KEYS = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}
_CHOICE_LEAD = re.compile(
    rf"^{_HEDGE}(?:(?:the\s+)?(?:correct\s+|final\s+|best\s+|right\s+)?(?:answer|option|choice)\s*(?:is\b)?\s*[:\-]?\s*)?",
    re.IGNORECASE,
)
_PAREN_LETTER = re.compile(r"^\(\s*([A-Za-z])\s*\)")
_BARE_LETTER = re.compile(r"^([A-Za-z])(?=[.):,\-\u2013\u2014]|$)")
_OPTION_PAREN = re.compile(r"\(([A-Z])\)[ \t]*")
_OPTION_LINE = re.compile(r"^[ \t]*([A-Z])[.):][ \t]+", re.MULTILINE)


def unwrap(answer: str) -> str:
    """``answer`` without the quotes, backticks, bold markers and spaces around it."""
    return _WRAPPERS.sub("", answer)


def is_words(text: str) -> bool:
    """Whether ``text`` reads as words: a run of two or more letters and no digit or LaTeX macro, or
    three or more letters spelled out with hyphens ('h-e-e-o')."""
    return not _NOT_WORDS.search(text) and bool(_WORD_RUN.search(text) or _SPELLED.match(text))


def text_key(text: str) -> str | None:
    """Lower case, no surrounding punctuation or quotes, no leading article, single spaces ('The Dog.' -> 'dog')."""
    words = LATEX_TEXT.sub(r"\1", text).replace("$", "").lower().strip(_SURROUNDING).split()
    if len(words) > 1 and words[0] in ARTICLES and len(words[1]) > 1:
        words = words[1:]
    return " ".join(words) or None


def boolean_key(text: str) -> str | None:
    """'yes' or 'no' when ``text`` opens with yes/no/true/false, alone on its line or before punctuation
    ('Yes.', '**No**, it cannot', 'probably no'; not 'No one knows')."""
    found = _BOOLEAN.match(unwrap(text))
    return _BOOLEAN_KEYS[found[1].lower()] if found else None


def choice_letter(text: str, whole: bool) -> str | None:
    """The option letter an answer names: '(B)', 'B)', 'B.', 'option B', 'the answer is B' all give 'B'.

    With ``whole`` the spelling must be the entire answer and the letter keeps its case (a single
    letter may be a variable); otherwise option text may follow ('(B) Paris') and the letter is upper case.
    """
    rest = _CHOICE_LEAD.sub("", unwrap(text), count=1)
    found = _PAREN_LETTER.match(rest) or _BARE_LETTER.match(rest)
    if not found:
        return None
    if whole:
        return found[1] if not rest[found.end() :].strip(" .):,-\u2013\u2014") else None
    return found[1].upper()


@lru_cache(maxsize=4096)
def question_options(question: str) -> Mapping[str, str]:
    """The options a question lists, letter -> text: '(A) London (B) Paris' or lines 'A. London'; {} if none.

    The options are the last run of consecutive letters from A, at least two of them."""
    for pattern in (_OPTION_PAREN, _OPTION_LINE):
        marks = _last_run(list(pattern.finditer(question)))
        if marks:
            ends = [m.start() for m in marks[1:]] + [_line_end(question, marks[-1].end())]
            texts = {m[1]: question[m.end() : end].strip().rstrip(",;").strip() for m, end in zip(marks, ends)}
            return MappingProxyType(texts)
    return MappingProxyType({})


def _last_run(marks: list[re.Match]) -> list[re.Match]:
    """The last run of at least two marks lettered A, B, C, ... in order."""
    runs: list[list[re.Match]] = []
    for mark in marks:
        if mark[1] == "A":
            runs.append([mark])
        elif runs and ord(mark[1]) == ord(runs[-1][-1][1]) + 1:
            runs[-1].append(mark)
    return next((run for run in reversed(runs) if len(run) >= 2), [])


def _line_end(text: str, start: int) -> int:
    """The end of the line that holds position ``start``."""
    end = text.find("\n", start)
    return len(text) if end < 0 else end
