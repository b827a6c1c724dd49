"""Unit tests of the Kubernetes stand-in's building blocks: selectors, patches, schema handling, Status
bodies,
server-side apply bookkeeping and table printing. Expected strings are the apiserver's (see each module)."""

from __future__ import annotations

import pytest

from runbook_lab.kube import managed
from runbook_lab.kube.errors import ApiError, FieldError, already_exists, conflict, invalid, not_found
from runbook_lab.kube.names import dns1035_label, dns1123_label, dns1123_subdomain, qualified_name
from runbook_lab.kube.patch import json_patch, merge_patch, strategic_merge_patch
from runbook_lab.kube.profiles import PROFILES, load_profile
from runbook_lab.kube.resources import type_from_crd, version_priority
from runbook_lab.kube.schema import apply_defaults, make_validator, prune, validate
from runbook_lab.kube.selectors import (
    fields_match,
    labels_match,
    parse_field_selector,
    parse_label_selector,
)
from runbook_lab.kube.tables import human_duration, jsonpath


def _obj(labels: dict[str, str]) -> dict:
    return {"metadata": {"labels": labels}}


# -- label selectors -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("team=a", {"team": "a"}, True),
        ("team==a", {"team": "a"}, True),
        ("team=a", {"team": "b"}, False),
        ("team!=a", {"team": "b"}, True),
        ("team!=a", {}, True),  # != matches objects without the key
        ("team in (a, b)", {"team": "b"}, True),
        ("team in (a,b)", {"team": "c"}, False),
        ("team notin (a,b)", {}, True),
        ("team notin (a,b)", {"team": "a"}, False),
        ("team", {"team": ""}, True),
        ("team", {}, False),
        ("!team", {}, True),
        ("!team", {"team": "x"}, False),
        ("tier in (web),team=a", {"tier": "web", "team": "a"}, True),
        ("tier in (web),team=a", {"tier": "web", "team": "b"}, False),
        ("karpenter.sh/nodepool=default", {"karpenter.sh/nodepool": "default"}, True),
        ("size>3", {"size": "4"}, True),
        ("size<3", {"size": "4"}, False),
    ],
)
def test_label_selector_semantics(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert labels_match(parse_label_selector(selector), _obj(labels)) is expected


@pytest.mark.parametrize("selector", ["team in (a", "bad key!=x", "team=a b", ",team=a"])
def test_malformed_label_selector_is_a_bad_request(selector: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_label_selector(selector)
    assert err.value.code == 400 and err.value.reason == "BadRequest"


def test_field_selector_equality_inequality_and_escapes() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "n1", "hostNetwork": True}}
    assert fields_match(parse_field_selector("spec.nodeName=n1,metadata.namespace==ns"), pod)
    assert not fields_match(parse_field_selector("spec.nodeName!=n1"), pod)
    assert fields_match(parse_field_selector("spec.hostNetwork=true"), pod)
    assert fields_match(parse_field_selector("spec.nodeName!=x"), {"spec": {}})  # missing field is ""
    terms = parse_field_selector(r"reason=a\,b")
    assert terms[0].value == "a,b"
    with pytest.raises(ApiError):
        parse_field_selector("nonsense")


# -- names ---------------------------------------------------------------------------------------
def test_name_rules_and_messages() -> None:
    assert dns1123_subdomain("a.b-c") == [] and dns1123_label("a-b") == [] and dns1035_label("a1") == []
    assert dns1035_label("1a")[0].startswith("a DNS-1035 label must consist of lower case alphanumeric")
    assert dns1123_label("a.b")[0].startswith("a lowercase RFC 1123 label must consist of")
    assert (
        "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*'"
        in dns1123_subdomain("Bad_Name")[0]
    )
    assert dns1123_label("a" * 64)[0] == "must be no more than 63 characters"
    assert qualified_name("example.com/ok") == []
    assert qualified_name("/x") == ["prefix part must be non-empty"]


# -- patches -------------------------------------------------------------------------------------
def test_merge_patch_rfc7386() -> None:
    target = {"a": {"b": 1, "c": 2}, "l": [1, 2], "keep": True}
    assert merge_patch(target, {"a": {"b": None, "d": 3}, "l": [3]}) == {
        "a": {"c": 2, "d": 3},
        "l": [3],
        "keep": True,
    }
    assert target["a"] == {"b": 1, "c": 2}  # input untouched


def test_json_patch_rfc6902_operations() -> None:
    doc = {"spec": {"list": [1, 2], "role": "a"}, "metadata": {"labels": {"a/b": "x"}}}
    out = json_patch(
        doc,
        [
            {"op": "add", "path": "/spec/list/-", "value": 3},
            {"op": "add", "path": "/spec/list/0", "value": 0},
            {"op": "replace", "path": "/spec/role", "value": "b"},
            {"op": "remove", "path": "/metadata/labels/a~1b"},
            {"op": "copy", "from": "/spec/role", "path": "/spec/copy"},
            {"op": "move", "from": "/spec/copy", "path": "/spec/moved"},
            {"op": "test", "path": "/spec/moved", "value": "b"},
        ],
    )
    assert out == {"spec": {"list": [0, 1, 2, 3], "role": "b", "moved": "b"}, "metadata": {"labels": {}}}


def test_json_patch_failures_map_to_apiserver_codes() -> None:
    with pytest.raises(ApiError) as err:
        json_patch({"spec": {}}, [{"op": "replace", "path": "/spec/missing", "value": 1}])
    assert (err.value.code, err.value.reason) == (422, "Invalid")
    assert err.value.message == "the server rejected our request due to an error in our request"
    with pytest.raises(ApiError) as err:
        json_patch({"spec": {}}, [{"op": "test", "path": "/spec", "value": {"x": 1}}])
    assert err.value.code == 422
    with pytest.raises(ApiError) as err:
        json_patch({}, {"op": "add"})  # not a list: the patch itself is malformed
    assert err.value.code == 400


def test_strategic_merge_patch_merges_known_lists_by_key() -> None:
    pod = {
        "spec": {
            "containers": [
                {"name": "a", "image": "x:1", "env": [{"name": "E", "value": "1"}]},
                {"name": "b", "image": "y:1"},
            ],
            "tolerations": [{"key": "t"}],
        },
        "metadata": {"finalizers": ["one"]},
    }
    out = strategic_merge_patch(
        pod,
        {
            "spec": {
                "containers": [
                    {"name": "a", "image": "x:2", "env": [{"name": "F", "value": "2"}]},
                    {"name": "b", "$patch": "delete"},
                ],
                "tolerations": [{"key": "u"}],
            },
            "metadata": {"finalizers": ["two"]},
        },
        "Pod",
    )
    assert out["spec"]["containers"] == [
        {"name": "a", "image": "x:2", "env": [{"name": "E", "value": "1"}, {"name": "F", "value": "2"}]}
    ]
    assert out["spec"]["tolerations"] == [{"key": "u"}]  # no patch strategy upstream: replaced
    assert out["metadata"]["finalizers"] == ["one", "two"]  # patchStrategy merge on a list of strings
    removed = strategic_merge_patch(
        out, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["one"]}}, "Pod"
    )
    assert removed["metadata"]["finalizers"] == ["two"]
    svc = strategic_merge_patch(
        {"spec": {"ports": [{"port": 80, "name": "http"}]}},
        {"spec": {"ports": [{"port": 443, "name": "https"}]}},
        "Service",
    )
    assert [p["port"] for p in svc["spec"]["ports"]] == [80, 443]


# -- schema --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ec2nodeclass_v1() -> dict:
    crd = next(c for c in load_profile("v1") if c["spec"]["names"]["kind"] == "EC2NodeClass")
    return type_from_crd(crd).schemas["v1"]


def _ec2(spec: dict) -> dict:
    return {
        "apiVersion": "karpenter.k8s.aws/v1",
        "kind": "EC2NodeClass",
        "metadata": {"name": "x"},
        "spec": spec,
    }


VALID_SPEC = {
    "role": "R",
    "amiSelectorTerms": [{"alias": "al2023@latest"}],
    "subnetSelectorTerms": [{"tags": {"k": "v"}}],
    "securityGroupSelectorTerms": [{"tags": {"k": "v"}}],
}


def test_schema_accepts_the_documented_minimal_ec2nodeclass(ec2nodeclass_v1: dict) -> None:
    obj = _ec2(dict(VALID_SPEC))
    assert prune(obj, ec2nodeclass_v1) == []
    apply_defaults(obj, ec2nodeclass_v1)
    assert obj["spec"]["metadataOptions"] == {
        "httpEndpoint": "enabled",
        "httpProtocolIPv6": "disabled",
        "httpPutResponseHopLimit": 1,
        "httpTokens": "required",
    }
    assert validate(obj, make_validator(ec2nodeclass_v1)) == []


def test_schema_prunes_unknown_fields_and_reports_their_paths(ec2nodeclass_v1: dict) -> None:
    obj = _ec2({**VALID_SPEC, "bogus": 1, "subnetSelectorTerms": [{"tags": {"k": "v"}, "extra": True}]})
    obj["metadata"]["clusterName"] = "old"
    assert sorted(prune(obj, ec2nodeclass_v1)) == [
        "metadata.clusterName",
        "spec.bogus",
        "spec.subnetSelectorTerms[0].extra",
    ]
    assert "bogus" not in obj["spec"] and obj["spec"]["subnetSelectorTerms"] == [{"tags": {"k": "v"}}]


def test_schema_errors_use_the_apiserver_wording(ec2nodeclass_v1: dict) -> None:
    validator = make_validator(ec2nodeclass_v1)
    errors = validate(_ec2({**VALID_SPEC, "role": 5}), validator)
    assert [str(e) for e in errors] == [
        'spec.role: Invalid value: "integer": spec.role in body must be of type string: "integer"'
    ]
    assert errors[0].type == "FieldValueTypeInvalid"
    spec = {k: v for k, v in VALID_SPEC.items() if k != "subnetSelectorTerms"}
    assert [str(e) for e in validate(_ec2(spec), validator)] == ["spec.subnetSelectorTerms: Required value"]
    errors = validate(_ec2({**VALID_SPEC, "metadataOptions": {"httpTokens": "sometimes"}}), validator)
    assert str(errors[0]) == (
        'spec.metadataOptions.httpTokens: Unsupported value: "sometimes": supported values: '
        '"required", "optional"'
    )


def test_null_in_a_non_nullable_field_is_dropped_before_validation(ec2nodeclass_v1: dict) -> None:
    obj = _ec2({**VALID_SPEC, "userData": None})
    apply_defaults(obj, ec2nodeclass_v1)
    assert "userData" not in obj["spec"]


# -- Status bodies -------------------------------------------------------------------------------
def test_status_bodies_match_apimachinery() -> None:
    assert not_found("ec2nodeclasses", "karpenter.k8s.aws", "x").status() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'ec2nodeclasses.karpenter.k8s.aws "x" not found',
        "reason": "NotFound",
        "details": {"name": "x", "group": "karpenter.k8s.aws", "kind": "ec2nodeclasses"},
        "code": 404,
    }
    assert already_exists("pods", "", "p").status()["details"] == {"name": "p", "kind": "pods"}
    assert conflict("pods", "", "p", "boom").message == 'Operation cannot be fulfilled on pods "p": boom'
    err = invalid("Pod", "", "p", [FieldError.required("spec.containers"), FieldError.required("spec.x")])
    assert err.message == 'Pod "p" is invalid: [spec.containers: Required value, spec.x: Required value]'
    assert err.status()["details"]["causes"][0] == {
        "reason": "FieldValueRequired",
        "message": "Required value",
        "field": "spec.containers",
    }


# -- server-side apply bookkeeping ---------------------------------------------------------------
def test_apply_owns_fields_and_removes_dropped_ones() -> None:
    cfg1 = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}}
    obj = managed.apply(None, cfg1, "mgr", "v1", "", False, "t1")
    entry = obj["metadata"]["managedFields"][0]
    assert (entry["manager"], entry["operation"]) == ("mgr", "Apply")
    assert entry["fieldsV1"] == {"f:data": {"f:a": {}, "f:b": {}}}
    cfg2 = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}
    obj = managed.apply(obj, cfg2, "mgr", "v1", "", False, "t2")
    assert obj["data"] == {"a": "1"}


def test_apply_conflicts_with_another_managers_field_unless_forced() -> None:
    old = {"metadata": {"name": "c"}, "data": {"a": "1"}}
    new = {"metadata": {"name": "c"}, "data": {"a": "2"}}
    managed.record_update(old, new, "editor", "v1", "", "t0")
    cfg = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "3"}}
    with pytest.raises(ApiError) as err:
        managed.apply(new, cfg, "applier", "v1", "", False, "t1")
    assert err.value.code == 409
    assert err.value.message == 'Apply failed with 1 conflict: conflict with "editor" using v1 at t0: .data.a'
    forced = managed.apply(new, cfg, "applier", "v1", "", True, "t1")
    assert forced["data"]["a"] == "3"
    owners = {e["manager"]: e["fieldsV1"] for e in forced["metadata"]["managedFields"]}
    assert owners == {"applier": {"f:data": {"f:a": {}}}}


def test_manager_defaults_to_user_agent_prefix() -> None:
    assert managed.manager_from_user_agent("OpenAPI-Generator/37.0.1/python") == "OpenAPI-Generator"


# -- misc ----------------------------------------------------------------------------------------
def test_human_duration_like_kubectl() -> None:
    assert [human_duration(s) for s in (5, 119, 150, 600, 9000, 12000, 100000, 200000, 86400 * 30)] == [
        "5s",
        "119s",
        "2m30s",
        "10m",
        "150m",
        "3h20m",
        "27h",
        "2d7h",
        "30d",
    ]


def test_jsonpath_subset_for_printer_columns() -> None:
    obj = {
        "status": {"conditions": [{"type": "Other", "status": "False"}, {"type": "Ready", "status": "True"}]}
    }
    assert jsonpath(obj, '.status.conditions[?(@.type=="Ready")].status') == ["True"]
    assert jsonpath(obj, ".status.conditions[0].type") == ["Other"]
    assert jsonpath(obj, ".spec.missing") == []


def test_version_priority_orders_like_kubernetes() -> None:
    assert sorted(["v1alpha5", "v1", "v1beta1", "v2beta1"], key=version_priority, reverse=True) == [
        "v1",
        "v2beta1",
        "v1beta1",
        "v1alpha5",
    ]


def test_every_profile_loads_and_serves_the_expected_kinds() -> None:
    served = {
        p: {(type_from_crd(c).kind, tuple(type_from_crd(c).versions)) for c in load_profile(p)}
        for p in PROFILES
    }
    assert ("NodePool", ("v1", "v1beta1")) in served["all"]
    assert ("Provisioner", ("v1alpha5",)) in served["all"]
    assert ("AWSNodeTemplate", ("v1alpha1",)) in served["all"]
    assert served["v1"] == {("EC2NodeClass", ("v1",)), ("NodePool", ("v1",)), ("NodeClaim", ("v1",))}
    assert served["v1beta1"] == {
        ("EC2NodeClass", ("v1beta1",)),
        ("NodePool", ("v1beta1",)),
        ("NodeClaim", ("v1beta1",)),
    }
    assert all(type_from_crd(c).namespaced is False for p in PROFILES for c in load_profile(p))
