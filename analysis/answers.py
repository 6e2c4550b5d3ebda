"""Final-answer extraction, typed canonical answer keys and time-bounded answer equivalence.

Every answer gets a type from its own text, never from a guess about the run:

* ``number``: an exact number ('18', '3/4'), units and thousands separators dropped;
* ``boolean``: 'yes' or 'no' (also from 'Yes.', '**No**', 'True', 'false');
* ``letter``: one letter, an option ('(B)', 'option B') or a variable ('x');
* ``choice``: an option letter under ``answer.format=choice``;
* ``text``: words (two or more letters in a row, no digit or LaTeX macro), compared as normalized
  strings (case, surrounding punctuation and quotes, a leading article, spacing);
* ``math``: anything else, LaTeX or an expression with operators or digits.

Only math reaches symbolic comparison (against math, a number or a letter); words never do, so no
algebra decides that two different words (``snta``, ``snat``) are equal. The few words that name a
constant (``MATH_WORDS``: 'infinity', 'pi') become its LaTeX.

Model output is untrusted: nothing here calls ``eval``, and every step has a bounded cost
that holds in any thread (no signals):

* extraction reads at most the last ``TAIL_CHARS`` characters of a text, with linear-time
  regular expressions and one linear brace-matching pass;
* answers longer than ``MAX_ANSWER_CHARS`` count as no answer, and numbers with more than
  ``MAX_DIGITS`` digits (or exponents beyond ``MAX_EXPONENT``) are not read as numbers;
* canonical keys are built with string rules and ``fractions.Fraction`` only, never sympy;
* symbolic comparison (math-verify with its signal timeouts disabled) runs in a small pool of
  worker processes (analysis/verify_pool.py, the one part of answer handling that is not pure); a
  call that overruns ``verify_pool.SYMBOLIC_TIMEOUT_S`` falls back (not equal) and its worker is
  killed and later replaced, so one comparison costs at most that long (plus a worker's start, once
  per process).  Answers that are too long, deeply nested or hold exponent towers are refused before
  they reach sympy (they fall back too).

Each ``answer.format`` is one entry of FORMATS: its extraction rules, its canonical key and how its
keys are typed (see the registry below).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Callable, Mapping, NamedTuple

from analysis import verify_pool, words

ANSWER_TYPES = ("number", "math", "letter", "boolean", "choice", "text")
GRADINGS = ("exact", "symbolic", "fallback")  # how a verdict was reached: key rules, math-verify, or neither
MATH_WORDS = {"infinity": r"\infty", "pi": r"\pi"}  # words that name a math constant (auto, math)

TAIL_CHARS = 8192
MAX_ANSWER_CHARS = 1000
MAX_DIGITS = 100
MAX_EXPONENT = 100
MAX_SYMBOLIC_CHARS = 400
MAX_SYMBOLIC_DEPTH = 12

# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------

_HASHES = re.compile(r"####[ \t]*([^\n]*)")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE = re.compile(r"(?<!\\)[{}]")
_ANSWER_IS = re.compile(r"\banswer\**\s*(?:\([^()\n]{0,40}\)\s*)?(?:is\b\s*:?|:)\s*([^\n]*)", re.IGNORECASE)
_OPTION_MARK = re.compile(r"\(([A-Z])\)")
_NUMBER_TOKEN = re.compile(
    r"-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:[eE][+-]?\d+)?(?:/\d+(?:\.\d+)?)?"
    r"|-?\\[dt]?frac\{\d+\}\{\d+\}"
)
_INLINE_MATH = re.compile(r"\$+([^$]+)\$+")
_SENTENCE_END = re.compile(r"\.(?=\s|$)")


def _tail(text: str) -> str:
    """The last TAIL_CHARS characters of ``text``, without a number cut in half at its start."""
    if len(text) <= TAIL_CHARS:
        return text
    return re.sub(r"^[\d.,]+", "", text[-TAIL_CHARS:])


def _usable(answer: str) -> str | None:
    """``answer`` stripped, or None when it is empty or longer than MAX_ANSWER_CHARS."""
    answer = answer.strip()
    return answer if answer and len(answer) <= MAX_ANSWER_CHARS else None


def _clean_phrase(phrase: str) -> str | None:
    """The answer in a phrase after '####' or 'answer is': no bold, inline math or trailing period."""
    phrase = phrase.strip().strip("*").strip()
    inline = _INLINE_MATH.search(phrase)
    if inline and inline.start() == 0:
        phrase = inline.group(1)
    phrase = _SENTENCE_END.split(phrase, maxsplit=1)[0]
    return _usable(phrase.strip().rstrip(".,;:").strip("*").strip())


def _brace_pairs(text: str) -> dict[int, int]:
    """Map each unescaped '{' position in ``text`` to its matching '}' (one linear pass)."""
    stack: list[int] = []
    pairs: dict[int, int] = {}
    for brace in _BRACE.finditer(text):
        if brace.group() == "{":
            stack.append(brace.start())
        elif stack:
            pairs[stack.pop()] = brace.start()
    return pairs


def _last_phrase(marker: re.Pattern[str], text: str) -> str | None:
    """The last usable phrase that group 1 of `marker` captures in ``text`` (a later unusable one keeps the earlier)."""
    found = None
    for match in marker.finditer(text):
        found = _clean_phrase(match.group(1)) or found
    return found


def _after_hashes(text: str) -> str | None:
    """The phrase after the last GSM8K-style '####' marker."""
    return _last_phrase(_HASHES, text)


def _last_boxed(text: str) -> str | None:
    """The content of the last balanced ``\\boxed{...}`` or ``\\fbox{...}``."""
    opens = [match.end() - 1 for match in _BOXED.finditer(text)]
    if not opens:
        return None
    pairs = _brace_pairs(text)
    for start in reversed(opens):
        if start in pairs:
            content = _usable(text[start + 1 : pairs[start]])
            if content:
                return content
    return None


def _after_answer_is(text: str) -> str | None:
    """The phrase after the last 'the (final) answer is', 'the answer (Yes or No) is' or 'Answer:'."""
    return _last_phrase(_ANSWER_IS, text)


def _last_number(text: str) -> str | None:
    """The last token of ``text`` that reads as a number (a minus glued to a word is no sign)."""
    for match in reversed(list(_NUMBER_TOKEN.finditer(text))):
        token = match.group()
        if token.startswith("-") and match.start() > 0:
            before = text[match.start() - 1]
            if before.isalnum() or before in ")]}":
                token = token[1:]
        if _parse_number(token) is not None:
            return token
    return None


def _last_option_mark(text: str) -> str | None:
    """The last option mark '(B)' in the text."""
    marks = _OPTION_MARK.findall(text)
    return f"({marks[-1]})" if marks else None


_ALL_RULES = (_after_hashes, _last_boxed, _after_answer_is, _last_number)  # extraction rules, in precedence order


def extract_answer(text: str, fmt: str = "auto") -> str | None:
    """The final answer written in a model's text, or None when there is none.

    Precedence: '#### N' (not for ``math``), last ``\\boxed{}``, last 'answer is X', then the last
    number (``text``: nothing more; ``choice``: the last '(B)'); for ``gsm8k``/``number`` a candidate
    without a digit falls through to the next rule.
    """
    form, tail = answer_format(fmt), _tail(text)
    for rule in form.rules:
        found = rule(tail)
        if found is not None and (not form.digits or any(ch.isdigit() for ch in found)):
            return found
    return None


# ---------------------------------------------------------------------------------------------
# Canonical keys
# ---------------------------------------------------------------------------------------------

_DROPPED = re.compile(
    r"\\left|\\right\.|\\right|\\displaystyle|(?<!\\)\\[!,;: ]|\\\$|\$|\\%|%"
    r"|\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree|\{,\}"
)
_FRAC_SHORT = re.compile(r"\\[dt]?frac\s*(\{[^{}]*\}|\w)\s*(\{[^{}]*\}|\w)")
_SQRT_SHORT = re.compile(r"\\sqrt\s*(\w)")
_TRAILING_TEXT = re.compile(r"(?<=\S)\s*\\(?:text|textrm|mbox)\{[^{}]*\}(?:\^\{?[23]\}?)?$")
_UNIT_WORDS = re.compile(r"^([-\d.,/]+)\s+[A-Za-z]{2,}[A-Za-z.\s]*(?:\^\{?[23]\}?)?$")
_ASSIGNMENT = re.compile(r"^[A-Za-z]\s*=\s*([^=]+)$")
_SPACES = re.compile(r"(\\[A-Za-z]+)?\s+(?=([A-Za-z]?))")
_PLAIN_NUMBER = re.compile(
    r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][+-]?\d+)?|-?\.\d+(?:[eE][+-]?\d+)?"
)
_RATIO = re.compile(rf"({_PLAIN_NUMBER.pattern})/({_PLAIN_NUMBER.pattern})")
_LATEX_FRACTION = re.compile(r"(-?)(\d+)?\\[dt]?frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}")


def _clean_latex(answer: str) -> str:
    """Deterministic LaTeX clean-up: no spacing/sizing macros, units, degrees, '$', '%' or text wrappers."""
    text = answer.strip()
    if text.startswith(("\\(", "\\[")) and text.endswith(("\\)", "\\]")):
        text = text[2:-2]
    text = _DROPPED.sub("", text.replace("~", " ")).strip()
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    text = _FRAC_SHORT.sub(lambda m: rf"\frac{_braced(m[1])}{_braced(m[2])}", text)
    text = _SQRT_SHORT.sub(r"\\sqrt{\1}", text)
    text = _TRAILING_TEXT.sub("", text)
    text = words.LATEX_TEXT.sub(r"\1", text).strip().rstrip(".").strip()
    text = _UNIT_WORDS.sub(r"\1", text)
    text = re.sub(r"^\(([A-Za-z])\)$", r"\1", text)
    return _ASSIGNMENT.sub(r"\1", text)


def _squeeze(text: str) -> str:
    """``text`` without spaces, except one between a macro and a following letter ('\\pi r')."""
    return _SPACES.sub(lambda m: (m[1] or "") + (" " if m[1] and m[2] else ""), text)


def _braced(argument: str) -> str:
    """A one-token LaTeX macro argument wrapped in braces (braced ones unchanged)."""
    return argument if argument.startswith("{") else "{" + argument + "}"


def _plain_fraction(number: str) -> Fraction | None:
    """A decimal/integer literal as a Fraction, refusing too many digits or a huge exponent."""
    mantissa, _, exponent = number.replace(",", "").lower().partition("e")
    if sum(ch.isdigit() for ch in mantissa) > MAX_DIGITS:
        return None
    if exponent and (len(exponent) > 4 or abs(int(exponent)) > MAX_EXPONENT):
        return None
    return Fraction(mantissa) * Fraction(10) ** int(exponent or 0)


def _parse_number(text: str) -> Fraction | None:
    """``text`` as an exact number (integer, decimal, a/b, \\frac{a}{b}, mixed 1\\frac{1}{2}), else None."""
    text = text.strip()
    if _PLAIN_NUMBER.fullmatch(text):
        return _plain_fraction(text)
    if ratio := _RATIO.fullmatch(text):
        numerator, denominator = _plain_fraction(ratio[1]), _plain_fraction(ratio[2])
    elif latex := _LATEX_FRACTION.fullmatch(text):
        numerator, denominator = _plain_fraction(latex[3]), _plain_fraction(latex[4])
        if numerator is not None and denominator and latex[2]:
            whole = _plain_fraction(latex[2])
            numerator = None if whole is None else whole * denominator + numerator
        if numerator is not None and latex[1]:
            numerator = -numerator
    else:
        return None
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _number_key(value: Fraction) -> str:
    """The canonical key of an exact number: '18', '-3/4'."""
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def _loose_number(text: str) -> Fraction | None:
    """The number an answer phrase states: after its last '=', else its first number."""
    text = text.rpartition("=")[2]
    for match in _NUMBER_TOKEN.finditer(text):
        value = _parse_number(match.group())
        if value is not None:
            return value
    return None


def _numeric_key(answer: str, options: Mapping[str, str] | None) -> str | None:
    """``gsm8k``/``number``: the number the answer states ('18 apples', 'x = 12'), else None."""
    text = _squeeze(_clean_latex(answer))
    value = _parse_number(text) if text else None
    if value is None and text:
        value = _loose_number(text)
    return None if value is None else _number_key(value)


def _typed_key(answer: str, options: Mapping[str, str] | None) -> str | None:
    """``auto``/``math``: a letter, number, yes/no, text or normalized-LaTeX key, by what the answer is."""
    letter = words.choice_letter(answer, whole=True)
    if letter:
        return letter
    text = _clean_latex(answer)
    squeezed = _squeeze(text)
    if not squeezed:
        return None
    value = _parse_number(squeezed)
    if value is not None:
        return _number_key(value)
    if boolean := words.boolean_key(text):
        return boolean
    if words.is_words(text):
        key = words.text_key(text)
        return MATH_WORDS.get(key, key)
    return squeezed


def _text_key(answer: str, options: Mapping[str, str] | None) -> str | None:
    """``text``: the normalized string, nothing more ('The Dog.' -> 'dog'; '5' and '5.0' differ)."""
    return words.text_key(answer)


def _choice_key(answer: str, options: Mapping[str, str] | None) -> str | None:
    """``choice``: the option letter the answer names, or the letter of the option whose text it is."""
    letter = words.choice_letter(words.LATEX_TEXT.sub(r"\1", answer).strip("$ "), whole=False)
    if letter or not options:
        return letter
    key = _typed_key(answer, None)
    matches = [mark for mark, text in options.items() if key is not None and _typed_key(text, None) == key]
    return matches[0] if len(matches) == 1 else None


def _typed_type(key: str) -> str:
    """The type of an ``auto``/``math`` key: number, boolean, letter, text or math."""
    if _parse_number(key) is not None:
        return "number"
    if key in ("yes", "no"):
        return "boolean"
    if len(key) == 1 and key.isalpha():
        return "letter"
    return "text" if words.is_words(key) else "math"


# ---------------------------------------------------------------------------------------------
# The answer formats (answer.format): a new one is its functions above and one line in FORMATS
# ---------------------------------------------------------------------------------------------


class AnswerFormat(NamedTuple):
    """How one answer.format reads answers: extraction rules tried in order, the canonical key of an answer
    (given the question's options), and the type (one of ANSWER_TYPES) of a key."""

    rules: tuple[Callable[[str], str | None], ...]
    key: Callable[[str, Mapping[str, str] | None], str | None]
    key_type: Callable[[str], str]
    digits: bool = False  # a candidate without a digit is no answer: the next rule is tried
    symbolic: bool = False  # a pair holding math may be compared by Math-Verify
    options: bool = False  # reads the options a question lists, so an option's text gives its letter


FORMATS: dict[str, AnswerFormat] = {
    "gsm8k": AnswerFormat(_ALL_RULES, _numeric_key, lambda key: "number", digits=True),
    "math": AnswerFormat(_ALL_RULES[1:], _typed_key, _typed_type, symbolic=True),
    "number": AnswerFormat(_ALL_RULES, _numeric_key, lambda key: "number", digits=True),
    "auto": AnswerFormat(_ALL_RULES, _typed_key, _typed_type, symbolic=True),
    "text": AnswerFormat(_ALL_RULES[:3], _text_key, lambda key: "text"),
    "choice": AnswerFormat((*_ALL_RULES[:3], _last_option_mark), _choice_key, lambda key: "choice", options=True),
}
ANSWER_FORMATS = tuple(FORMATS)


def answer_format(fmt: str) -> AnswerFormat:
    """The entry of FORMATS named ``fmt``; a ValueError naming the known ones for any other."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown answer format {fmt!r}; expected one of {ANSWER_FORMATS}")
    return FORMATS[fmt]


def canonicalize(answer: str | None, fmt: str = "auto", options: Mapping[str, str] | None = None) -> str | None:
    """A canonical key: equal keys mean equal answers; None for no answer.

    ``auto``/``math`` type each answer (see the module docstring): numbers become '18' or '3/4',
    yes/no 'yes' or 'no', words a normalized string, LaTeX a normalized form. ``gsm8k``/``number``
    keep only a number, ``text`` only the normalized string, ``choice`` only an option letter (with
    ``options``, from ``words.question_options``, an option's text gives its letter).
    """
    form = answer_format(fmt)
    if answer is None or len(answer) > MAX_ANSWER_CHARS:
        return None
    return form.key(words.unwrap(answer), options)


def answer_type(key: str | None, fmt: str = "auto") -> str:
    """The type of a canonical key (one of ANSWER_TYPES), or 'none' for no answer."""
    form = answer_format(fmt)
    return "none" if key is None else form.key_type(key)


# ---------------------------------------------------------------------------------------------
# Equivalence
# ---------------------------------------------------------------------------------------------

_POWER = r"(?:\^|\*\*)\s*\{?\s*[-+]?"
_TOWER = re.compile(rf"\d\s*{_POWER}\d+\s*\}}?\s*(?:\^|\*\*)|{_POWER}\d{{5,}}")
_BIG_FACTORIAL = re.compile(r"(?:\d{4,}|[)}])\s*!")


def _too_big_for_sympy(key: str) -> bool:
    """Whether a key is too long, too deeply nested or explosive (numeric towers, huge powers) for sympy."""
    if len(key) > MAX_SYMBOLIC_CHARS:
        return True
    depth = deepest = 0
    for ch in key:
        depth += (ch in "{([") - (ch in "})]")
        deepest = max(deepest, depth)
    if deepest > MAX_SYMBOLIC_DEPTH:
        return True
    return bool(_TOWER.search(key) or _BIG_FACTORIAL.search(key))


class Comparison(NamedTuple):
    """A verdict on two answers and how it was reached (one of GRADINGS)."""

    equal: bool
    how: str


_SYMBOLIC_TYPES = {"math", "number", "letter"}  # types that may meet math in sympy; never text


def compare(a: str | None, b: str | None, fmt: str = "auto", options: Mapping[str, str] | None = None) -> Comparison:
    """Whether two answers are equal, and how that was decided (time-bounded).

    Inputs are canonicalized again (idempotent). Equal keys are equal; otherwise only a pair holding
    a ``math`` answer (with a math, number or letter one) goes to math-verify, in a worker process
    bounded by verify_pool.SYMBOLIC_TIMEOUT_S; numbers compare exactly (0.1111 is not 1/9), and words, yes/no and
    choices never meet algebra. An overrun or unparsable pair falls back: not equal.
    """
    form = answer_format(fmt)
    a_key, b_key = canonicalize(a, fmt, options), canonicalize(b, fmt, options)
    if a_key is None or b_key is None or a_key == b_key:
        return Comparison(a_key is not None and a_key == b_key, "exact")
    types = {form.key_type(a_key), form.key_type(b_key)}
    if not form.symbolic or "math" not in types or not types <= _SYMBOLIC_TYPES:
        return Comparison(False, "exact")
    if _too_big_for_sympy(a_key) or _too_big_for_sympy(b_key):
        return Comparison(False, "fallback")
    verdict = verify_pool.symbolic_equal(*sorted((a_key, b_key)))
    return Comparison(bool(verdict), "fallback" if verdict is None else "symbolic")


def is_equivalent(a: str | None, b: str | None, fmt: str = "auto", options: Mapping[str, str] | None = None) -> bool:
    """Whether two answers are equal (see ``compare``)."""
    return compare(a, b, fmt, options).equal


def judge(answer: str | None, gold: str, fmt: str = "auto", options: Mapping[str, str] | None = None) -> Comparison:
    """How an answer compares with the gold answer (None is never correct)."""
    return compare(answer, gold, fmt, options) if answer is not None else Comparison(False, "exact")


def grade(answer: str | None, gold: str, fmt: str = "auto", options: Mapping[str, str] | None = None) -> bool:
    """Whether an answer equals the gold answer (None is never correct)."""
    return judge(answer, gold, fmt, options).equal
