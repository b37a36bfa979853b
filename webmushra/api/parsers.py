"""The API's JSON parser: DRF's, refusing what the database cannot store (NaN, Infinity, a NUL
character, an unpaired surrogate; ``webmushra.inputs``) with a 400 naming the field."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from ..inputs import json_problem


class StrictJSONParser(JSONParser):
    #: NaN and Infinity are parsed, then refused by ``json_problem`` naming the field they are in.
    strict = False

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("the request body is nested too deeply") from None
        problem = json_problem(data)
        if problem:
            raise ParseError(problem)
        return data
