"""`--output json` of releases, show and diff: each document validated against its JSON Schema in
docs/json/, and its content checked against the manifests it came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema  # installed with kubernetes-validate (the dev extra)
import pytest
from click.testing import CliRunner

from chaosmirror.cli import cli
from chaosmirror.release import Catalog, bundled_dir
from tests.conftest import REPO_ROOT

SCHEMAS = REPO_ROOT / "docs" / "json"


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def output(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.output)
    return doc


def test_releases_json_matches_its_schema_and_the_manifests():
    doc = output("releases", "--output", "json")
    validator("releases").validate(doc)
    catalog = Catalog(bundled_dir())
    assert [r["release"] for r in doc["releases"]] == catalog.names()
    by_name = {r["release"]: r for r in doc["releases"]}
    assert by_name["1.47.0"]["groups"]["dedicated"] == {"images": 11, "optional": 2, "note": None}
    assert by_name["1.94.4"]["groups"]["dedicated"]["images"] == 0
    assert "self-managed image lists at 1.69" in by_name["1.94.4"]["groups"]["dedicated"]["note"]


@pytest.mark.parametrize(
    "args",
    [
        ("1.47.0",),
        ("1.61.11", "--group", "ddcr"),
        ("1.61.11", "--no-optional"),
        ("1.94.4",),
        ("1.30.0", "--group", "dedicated", "--group", "experiment"),
    ],
)
def test_show_json_matches_its_schema_and_the_release(args):
    doc = output("show", *args, "--output", "json")
    validator("show").validate(doc)
    groups = [a for a in args[2:] if a not in ("--group", "--no-optional")]
    optional = "--no-optional" not in args
    rel = Catalog(bundled_dir()).load(args[0])
    assert [(i["group"], i["component"], i["image"], i["optional"]) for i in doc["images"]] == [
        (i.group, i.component, str(i.ref), i.optional) for i in rel.images(groups, optional=optional)
    ]
    assert doc["optional"] is optional and doc["groups"] == (groups or list(rel.groups))
    assert all(doc["sources"][i["source_key"]]["title"] == i["source"] for i in doc["images"])


def test_show_format_json_is_an_alias_of_output_json():
    assert output("show", "1.47.0", "--format", "json") == output("show", "1.47.0", "--output", "json")
    clash = CliRunner().invoke(cli, ["show", "1.47.0", "--format", "refs", "--output", "json"])
    assert clash.exit_code == 2 and "disagree" in clash.output


def test_diff_json_matches_its_schema():
    doc = output("diff", "1.92", "1.93", "--output", "json")
    validator("diff").validate(doc)
    assert (doc["old"], doc["new"]) == ("1.92.0", "1.93.0")
    sdc = next(c for c in doc["changes"] if c["component"] == "discovery-collector")
    assert sdc == {
        "change": "retagged",
        "group": "ddcr",
        "component": "discovery-collector",
        "repository": "docker.io/harness/service-discovery-collector",
        "old": "docker.io/harness/service-discovery-collector:0.72.0",
        "new": "docker.io/harness/service-discovery-collector:0.73.0",
    }
    same = output("diff", "1.47.0", "1.47.0", "--output", "json")
    validator("diff").validate(same)
    assert same["changes"] == []


@pytest.mark.parametrize("name", ["releases", "show", "diff"])
def test_the_schemas_reject_an_undocumented_or_missing_field(name):
    args = {"releases": ("releases",), "show": ("show", "1.47.0"), "diff": ("diff", "1.47.0", "1.53.1")}[name]
    doc = output(*args, "--output", "json")
    check = validator(name)
    assert not list(check.iter_errors(doc))
    assert list(check.iter_errors({**doc, "undocumented": 1}))
    assert list(check.iter_errors({k: v for k, v in doc.items() if k != "format"}))
    assert list(check.iter_errors({**doc, "format": 2}))


def test_every_json_document_is_described_in_the_docs():
    text = (REPO_ROOT / "docs" / "json-output.md").read_text()
    for schema in sorted(Path(SCHEMAS).glob("*.schema.json")):
        assert f"json/{schema.name}" in text, schema.name
