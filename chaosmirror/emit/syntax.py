"""How a value is written in each file format the renderers produce, so no value can break a file."""

from __future__ import annotations

import json
from typing import Any

import yaml


def toml_str(value: str) -> str:
    """A TOML basic string. JSON's escapes (with non-ASCII as \\uXXXX) are all valid TOML."""
    return json.dumps(value)


def hcl_str(value: str) -> str:
    """An HCL quoted string, with `${` and `%{` escaped so nothing is interpolated."""
    return json.dumps(value).replace("${", "$${").replace("%{", "%%{")


def yaml_str(value: str) -> str:
    """A YAML double-quoted scalar (a JSON string is one)."""
    return json.dumps(value)


def yaml_doc(doc: Any) -> str:
    """Block-style YAML in the order given; strings that would read as numbers or booleans are quoted."""
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=10_000)


def comment(text: str, *, marker: str = "#") -> str:
    """`text` as comment lines (one per line of text), ending with a newline."""
    return "".join(f"{marker} {line}".rstrip() + "\n" for line in text.splitlines())
