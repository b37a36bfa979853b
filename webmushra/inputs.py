"""Input the database cannot store, refused at the door with the field it is in.

A JSON body may carry text with a NUL character (``\\u0000``: PostgreSQL refuses it in text
and in ``jsonb``) or an unpaired surrogate (``\\ud800``: no UTF-8 encoding exists, so neither
SQLite nor PostgreSQL can be sent it), and Python's parser accepts ``NaN`` and ``Infinity``
(not JSON; ``jsonb`` refuses them). Each would reach the database and fail there as a 500;
``json_problem`` finds the first one and names where it is, for a 400.
"""

from __future__ import annotations

import json
import math
from typing import Any


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored (None when it can)."""
    if "\x00" in text:
        return "text with a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "text with an unpaired surrogate (not UTF-8)"
    return None


#: Paths are shown up to about this many characters (and built no longer: a deep document
#: would make building them quadratic).
PATH_CHARS = 200


def _member(path: str, key: str) -> str:
    """``path.key``, or ``path["key"]`` for a key that is not a plain name (shortened if long)."""
    if len(path) > PATH_CHARS:
        return path
    if key.isidentifier():
        return f"{path}.{key}" if path else key
    shown = key if len(key) <= 40 else key[:40] + "..."
    return f"{path}[{json.dumps(shown)}]"


def _index(path: str, i: int) -> str:
    return path if len(path) > PATH_CHARS else f"{path}[{i}]"


def _shown(path: str) -> str:
    return "body" if not path else path if len(path) <= PATH_CHARS else path[:PATH_CHARS] + "..."


def json_problem(value: Any, where: str = "") -> str | None:
    """``"<field path>: <problem>"`` for the first value in a parsed JSON document that cannot be
    stored, or None. Walks without recursion, so a deep document cannot exhaust the stack."""
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:
        path, item = stack.pop()
        problem = None
        if isinstance(item, str):
            problem = text_problem(item)
        elif isinstance(item, float) and not math.isfinite(item):
            problem = f"{item} is not a number JSON allows"
        elif isinstance(item, dict):
            for key, inner in reversed(list(item.items())):
                key_problem = text_problem(str(key))
                if key_problem:
                    return f"{_shown(path)}: a key is {key_problem}"
                stack.append((_member(path, str(key)), inner))
        elif isinstance(item, list):
            stack.extend((_index(path, i), inner) for i, inner in reversed(list(enumerate(item))))
        if problem:
            return f"{_shown(path)}: {problem}"
    return None
