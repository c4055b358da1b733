"""The JSON documents of runs (report, verify, bundle.json) against their schemas in docs/json/, built
in memory with every optional field set, so a field printed but not documented fails here too (the
runs against real registries validate what the commands print: tests/test_verify.py,
tests/test_several_releases.py)."""

from __future__ import annotations

import json

import pytest

from chaosmirror import bundle as fmt
from chaosmirror.ref import ImageRef
from chaosmirror.report import Entry, Report
from chaosmirror.verdict import Check, ExtraTag, Seen, judge
from chaosmirror.verify import Verification
from tests.test_release_json import validator

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def a_report() -> Report:
    needed = {"docker.io/harness/a:1": ("1.93.0",)}
    report = Report("mirror", "1.93.0+1.94.4", "reg.example/harness", "skopeo", releases=("1.93.0", "1.94.4"),
                    needed_by=needed, notes=["3 requests to docker.io were retried"])  # fmt: skip
    copied = Entry("docker.io/harness/a:1", "reg.example/harness/a:1", "copied", D1, ("ddcr/a",),
                   "mirror.example/harness/a:1", ("linux/amd64",), 10, 0.5, "not in target", "", D2,
                   "skopeo kept failing; chaosmirror's client finished the copy")  # fmt: skip
    failed = Entry("docker.io/harness/b:1", "reg.example/harness/b:1", "failed", error="not found in the source")
    report.entries = [copied, failed]
    return report


def a_verification() -> Verification:
    dst = ImageRef.parse("reg.example/harness/a:1")
    check = Check("docker.io/harness/a:1", dst, ("ddcr/a",), ("1.94.4",), D1, "report",
                  extra_tags=(ExtraTag("sha256-" + "1" * 64 + ".sig", "signature"),))  # fmt: skip
    verdict = judge(check, Seen(D2, {}), {}, {check.extra_tags[0].tag: Seen()})
    unknown = Check("docker.io/harness/b:1", dst, releases=("1.94.4",), unknown="the source could not be read")
    gone = judge(unknown, Seen(error="HTTP 500"), {})
    return Verification(("1.94.4",), "reg.example/harness", [verdict, gone], "report", ["a note"])


def test_a_report_with_every_field_matches_its_schema():
    doc = a_report().to_json()
    validator("report").validate(doc)
    assert doc["release"] == "1.93.0+1.94.4" and doc["releases"] == ["1.93.0", "1.94.4"]
    assert [e["releases"] for e in doc["images"]] == [["1.93.0"], ["1.93.0", "1.94.4"]]  # unlisted: every release


def test_a_one_release_report_lists_its_release():
    doc = Report("plan", "1.47.0", "reg.example/harness").to_json()
    validator("report").validate(doc)
    assert doc["releases"] == ["1.47.0"]


def test_a_verification_with_problems_of_every_kind_matches_its_schema():
    doc = a_verification().to_json()
    validator("verify").validate(doc)
    kinds = [p["kind"] for i in doc["images"] for p in i["problems"]]
    assert kinds == ["wrong-digest", "missing-tag", "unreadable"]
    assert doc["status"] == "incomplete" and doc["summary"] == {"ok": 0, "missing": 1, "wrong": 0, "error": 1}


def test_bundle_json_of_a_delta_and_of_several_releases_matches_its_schema():
    image = fmt.BundleImage("docker.io/harness/a:1", "a:1", D1, ("linux/amd64",), 10, ("ddcr/a",), D1,
                            releases=("1.93.0", "1.94.4"))  # fmt: skip
    several = fmt.BundleInfo("oci", "1.93.0+1.94.4", (image,), created="2026-01-01T00:00:00Z", since="1.92.0",
                             unchanged=(image,), releases=("1.93.0", "1.94.4"))  # fmt: skip
    doc = json.loads(several.to_json())
    validator("bundle").validate(doc)
    assert fmt.BundleInfo.from_json(several.to_json(), "x") == several  # read back as written
    one = fmt.BundleInfo("oci", "1.94.4", (fmt.BundleImage("docker.io/harness/a:1", "a:1", D1, (), 10),))
    doc = json.loads(one.to_json())
    validator("bundle").validate(doc)
    assert "releases" not in doc and "releases" not in doc["images"][0]  # as earlier versions wrote it


@pytest.mark.parametrize("name", ["report", "verify", "bundle"])
def test_the_run_schemas_reject_an_undocumented_or_missing_field(name):
    doc = {"report": lambda: a_report().to_json(), "verify": lambda: a_verification().to_json(),
           "bundle": lambda: json.loads(fmt.BundleInfo("oci", "1.94.4", ()).to_json())}[name]()  # fmt: skip
    check = validator(name)
    assert not list(check.iter_errors(doc))
    assert list(check.iter_errors({**doc, "undocumented": 1}))
    assert list(check.iter_errors({k: v for k, v in doc.items() if k != "format"}))
    assert list(check.iter_errors({**doc, "format": 3}))
    if name != "bundle":
        entry = {**doc["images"][0], "undocumented": 1}
        assert list(check.iter_errors({**doc, "images": [entry]}))
