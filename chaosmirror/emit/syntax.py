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


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line strings (a PEM certificate) as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _represent_str)


def yaml_doc(doc: Any) -> str:
    """Block-style YAML in the order given; strings that would read as numbers or booleans are quoted,
    multi-line strings are literal blocks."""
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=10_000)


def comment(text: str, *, marker: str = "#") -> str:
    """`text` as comment lines (one per line of text), ending with a newline."""
    return "".join(f"{marker} {line}".rstrip() + "\n" for line in text.splitlines())
