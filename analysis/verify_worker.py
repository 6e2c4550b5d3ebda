"""The math-verify worker process behind ``analysis.answers``: one comparison per line, memory-capped.

    python -P analysis/verify_worker.py MEMORY_BYTES

Reads JSON ``[a, b]`` lines on stdin and answers each with a line on stdout: '1' (equal), '0' (not
equal) or 'u' (either side does not parse, or math-verify failed). It imports nothing from marginal,
so it starts the same from any install; its caller kills it when it overruns.
"""

from __future__ import annotations

import json
import os
import resource
import sys


def serve(memory_bytes: int) -> None:
    """Say 'ready', then answer every line of stdin until it closes."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    soft = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever math-verify prints goes to stderr, never into the replies
    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    replies.write("ready\n")
    replies.flush()
    for line in sys.stdin:
        a, b = json.loads(line)
        try:
            parsed_a = parse("\\boxed{" + a + "}", config, parsing_timeout=None)
            parsed_b = parse("\\boxed{" + b + "}", config, parsing_timeout=None)
            if parsed_a and parsed_b:
                same = verify(parsed_a, parsed_b, timeout_seconds=None) or verify(parsed_b, parsed_a, timeout_seconds=None)
                reply = "1" if same else "0"
            else:
                reply = "u"
        except Exception:  # includes MemoryError (RLIMIT_AS) and RecursionError
            reply = "u"
        replies.write(reply + "\n")
        replies.flush()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
