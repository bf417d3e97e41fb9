"""JSON the way the task rows store it, refusing up front what PostgreSQL's ``jsonb`` would refuse
at the insert: NaN and infinity, the NUL character (``\\u0000``), and text that is not Unicode
(a lone surrogate, which a JSON body may spell as ``\\ud800``)."""

from __future__ import annotations

import json
import re
from typing import Any

#: a NUL character as JSON writes it: ``\u0000`` after an even number of backslashes
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def encode(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON; :class:`ValueError` saying what the database would refuse."""
    try:
        encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if _NUL.search(encoded):
        raise ValueError("holds a NUL character (\\u0000), which the database cannot store")
    try:
        return encoded.encode()
    except UnicodeEncodeError:
        raise ValueError("holds a lone surrogate (\\ud800-\\udfff), which is not Unicode text") from None
