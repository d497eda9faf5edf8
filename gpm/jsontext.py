"""JSON from outside (users, files, Ollama) where too-deep nesting is malformed input like any other.

Python's decoder recurses once per nested array or object, so ``[[[[...`` 5,000
levels deep raises RecursionError, which is no ValueError: code that handled
malformed JSON let it through as an internal error (#12.11).
"""

from __future__ import annotations

import json
from typing import Any


class TooDeep(ValueError):
    """The document nests arrays or objects too deeply to decode."""

    msg = "arrays or objects nested too deeply"


def loads(text: str | bytes) -> Any:
    """``json.loads``; too-deep nesting raises ``TooDeep``, a ValueError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise TooDeep(TooDeep.msg) from None
