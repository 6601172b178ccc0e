"""Settings types shared by both services' pydantic-settings classes."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator
from pydantic_settings import NoDecode


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CommaSeparated = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]
"""A list read from one environment variable as ``a, b,c`` (blanks and empty items dropped), not as JSON.

``NoDecode`` stops pydantic-settings from parsing the variable as JSON first, as its documentation
shows for comma-separated values; a list given in Python passes through unchanged.
"""
