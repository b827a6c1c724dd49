"""The Kubernetes API stand-in driven over HTTP by the official client (kubernetes 37.0.1) and raw httpx.

Each test starts its own stand-in on an ephemeral port and talks to it through a kubeconfig written by
write_kubeconfig, exactly as lab code and notebooks do.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from runbook_lab.kube import KubeStandIn, write_kubeconfig

KARPENTER_AWS, KARPENTER = "karpenter.k8s.aws", "karpenter.sh"


@pytest.fixture
def api(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    yield api_client
    api_client.close()


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def status_of(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


def ec2nodeclass(name: str = "default", **spec: Any) -> dict[str, Any]:
    """A v1 EC2NodeClass shaped like aws/karpenter-provider-aws examples/v1/*.yaml."""
    body = {
        "apiVersion": "karpenter.k8s.aws/v1",
        "kind": "EC2NodeClass",
        "metadata": {"name": name},
        "spec": {
            "role": "KarpenterNodeRole-my-cluster",
            "amiSelectorTerms": [{"alias": "al2023@v20260714"}],
            "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": "my-cluster"}}],
            "securityGroupSelectorTerms": [{"tags": {"karpenter.sh/discovery": "my-cluster"}}],
        },
    }
    body["spec"].update(spec)
    return body


def nodepool_v1(name: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "spec": {
                    "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
                    "requirements": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}],
                }
            },
            "disruption": {
                "consolidationPolicy": "WhenEmptyOrUnderutilized",
                "consolidateAfter": "1m",
                "budgets": [{"nodes": "10%", "reasons": ["Drifted"]}],
            },
        },
    }


# Karpenter kinds at every served version, with a minimal valid body each (shapes of Karpenter's examples/).
KARPENTER_OBJECTS = [
    (KARPENTER_AWS, "v1", "ec2nodeclasses", ec2nodeclass("nc-v1")),
    (
        KARPENTER_AWS,
        "v1beta1",
        "ec2nodeclasses",
        {
            "apiVersion": "karpenter.k8s.aws/v1beta1",
            "kind": "EC2NodeClass",
            "metadata": {"name": "nc-v1beta1"},
            "spec": {
                "amiFamily": "AL2",
                "role": "KarpenterNodeRole-my-cluster",
                "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": "my-cluster"}}],
                "securityGroupSelectorTerms": [{"tags": {"karpenter.sh/discovery": "my-cluster"}}],
            },
        },
    ),
    (KARPENTER, "v1", "nodepools", nodepool_v1("np-v1")),
    (
        KARPENTER,
        "v1beta1",
        "nodepools",
        {
            "apiVersion": "karpenter.sh/v1beta1",
            "kind": "NodePool",
            "metadata": {"name": "np-v1beta1"},
            "spec": {
                "template": {
                    "spec": {
                        "nodeClassRef": {"name": "default"},
                        "requirements": [
                            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}
                        ],
                    }
                }
            },
        },
    ),
    (
        KARPENTER,
        "v1",
        "nodeclaims",
        {
            "apiVersion": "karpenter.sh/v1",
            "kind": "NodeClaim",
            "metadata": {"name": "nclaim-v1"},
            "spec": {
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
                "requirements": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}],
            },
        },
    ),
    (
        KARPENTER,
        "v1beta1",
        "nodeclaims",
        {
            "apiVersion": "karpenter.sh/v1beta1",
            "kind": "NodeClaim",
            "metadata": {"name": "nclaim-v1beta1"},
            "spec": {
                "nodeClassRef": {"name": "default"},
                "requirements": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}],
            },
        },
    ),
    (
        KARPENTER_AWS,
        "v1alpha1",
        "awsnodetemplates",
        {
            "apiVersion": "karpenter.k8s.aws/v1alpha1",
            "kind": "AWSNodeTemplate",
            "metadata": {"name": "ant"},
            "spec": {
                "subnetSelector": {"karpenter.sh/discovery": "my-cluster"},
                "securityGroupSelector": {"karpenter.sh/discovery": "my-cluster"},
            },
        },
    ),
    (
        KARPENTER,
        "v1alpha5",
        "provisioners",
        {
            "apiVersion": "karpenter.sh/v1alpha5",
            "kind": "Provisioner",
            "metadata": {"name": "prov"},
            "spec": {"providerRef": {"name": "ant"}},
        },
    ),
]


# -- kubeconfig ------------------------------------------------------------------------------------
def test_kubeconfig_loads_with_load_kube_config(kube: KubeStandIn, tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "nested" / "config", kube.url, context="mirror-lab", namespace="ops")
    contexts, active = config.list_kube_config_contexts(config_file=str(path))
    assert active["name"] == "mirror-lab" and active["context"]["namespace"] == "ops"
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=configuration)
    assert configuration.host == kube.url
    assert configuration.auth_settings()["BearerToken"]["value"] == "Bearer lab-token-not-a-secret"
    with client.ApiClient(configuration) as api_client:
        assert client.CoreV1Api(api_client).read_namespace("default").metadata.name == "default"


# -- discovery -------------------------------------------------------------------------------------
def test_discovery_documents_validate_in_the_client(api: client.ApiClient) -> None:
    version = client.VersionApi(api).get_code()  # GET /version/ ; VersionInfo validates every field
    assert (version.major, version.minor) == ("1", "33")
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]  # GET /api/
    groups = {g.name: g for g in client.ApisApi(api).get_api_versions().groups}  # GET /apis/
    assert {"batch", "networking.k8s.io", KARPENTER, KARPENTER_AWS} <= set(groups)
    assert [v.version for v in groups[KARPENTER].versions] == ["v1", "v1beta1", "v1alpha5"]
    assert groups[KARPENTER].preferred_version.version == "v1"
    core_resources = {r.name: r for r in client.CoreV1Api(api).get_api_resources().resources}
    assert core_resources["pods"].namespaced and not core_resources["nodes"].namespaced
    assert "pods/status" in core_resources and core_resources["pods"].short_names == ["po"]
    karpenter = {r.name: r for r in client.CustomObjectsApi(api).get_api_resources(KARPENTER, "v1").resources}
    assert karpenter["nodepools"].namespaced is False and "nodepools/status" in karpenter


def test_fresh_state_has_default_namespaces_and_the_kubernetes_service(core: client.CoreV1Api) -> None:
    assert sorted(n.metadata.name for n in core.list_namespace().items) == [
        "default",
        "kube-node-lease",
        "kube-public",
        "kube-system",
    ]
    ns = core.read_namespace("default")
    assert ns.status.phase == "Active" and ns.metadata.labels == {"kubernetes.io/metadata.name": "default"}
    svc = core.read_namespaced_service("kubernetes", "default")
    assert svc.spec.cluster_ip == "10.100.0.1"


# -- core kinds ------------------------------------------------------------------------------------
def test_namespace_and_node_crud(core: client.CoreV1Api) -> None:
    created = core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="lab")))
    assert created.metadata.uid and created.metadata.resource_version and created.metadata.creation_timestamp
    assert created.spec.finalizers == ["kubernetes"] and created.status.phase == "Active"

    node = client.V1Node(
        metadata=client.V1ObjectMeta(
            name="ip-10-0-1-1.ec2.internal", labels={"karpenter.sh/nodepool": "default"}
        ),
        status=client.V1NodeStatus(conditions=[client.V1NodeCondition(type="Ready", status="True")]),
    )
    created_node = core.create_node(node)
    assert (
        created_node.status.conditions[0].type == "Ready"
    )  # node status is kept on create (kubelet registration)
    patched = core.patch_node(created_node.metadata.name, {"spec": {"unschedulable": True}})
    assert patched.spec.unschedulable is True
    assert int(patched.metadata.resource_version) > int(created_node.metadata.resource_version)
    assert [n.metadata.name for n in core.list_node(field_selector="spec.unschedulable=true").items] == [
        created_node.metadata.name
    ]
    deleted = core.delete_node(created_node.metadata.name)
    assert deleted["status"] == "Success" and deleted["details"]["kind"] == "nodes"
    with pytest.raises(ApiException) as err:
        core.read_node(created_node.metadata.name)
    assert err.value.status == 404


def test_pod_create_defaults_status_subresource_and_delete(core: client.CoreV1Api) -> None:
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="web", labels={"app": "web"}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx:1.27")]),
    )
    created = core.create_namespaced_pod("default", pod)
    assert created.status.phase == "Pending" and created.status.qos_class == "BestEffort"
    assert (
        created.spec.restart_policy == "Always"
        and created.spec.containers[0].image_pull_policy == "IfNotPresent"
    )
    assert created.spec.service_account_name == "default"

    status = core.read_namespaced_pod_status("web", "default")
    status.status.phase = "Running"
    status.spec.containers[0].image = "ignored:by-status"  # the status subresource ignores the spec
    replaced = core.replace_namespaced_pod_status("web", "default", status)
    assert replaced.status.phase == "Running" and replaced.spec.containers[0].image == "nginx:1.27"
    patched = core.patch_namespaced_pod_status("web", "default", {"status": {"podIP": "10.0.0.5"}})
    assert patched.status.pod_ip == "10.0.0.5"
    assert [
        p.metadata.name for p in core.list_pod_for_all_namespaces(field_selector="status.phase=Running").items
    ] == ["web"]

    with pytest.raises(ApiException) as err:  # a pod's spec is immutable apart from a few fields
        core.patch_namespaced_pod("web", "default", {"spec": {"restartPolicy": "Never"}})
    assert err.value.status == 422 and status_of(err.value)["details"]["causes"][0]["field"] == "spec"

    deleted = core.delete_namespaced_pod("web", "default")  # unbound pod: deleted at once, object returned
    assert deleted.metadata.name == "web"
    assert core.list_namespaced_pod("default").items == []


def test_bound_pod_is_deleted_gracefully_until_grace_zero(core: client.CoreV1Api) -> None:
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name="n1")))
    core.create_namespaced_pod(
        "default",
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="p"),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
        ),
    )
    binding = client.V1Binding(
        metadata=client.V1ObjectMeta(name="p"), target=client.V1ObjectReference(kind="Node", name="n1")
    )
    core.create_namespaced_pod_binding("p", "default", binding, _preload_content=False)
    assert core.read_namespaced_pod("p", "default").spec.node_name == "n1"
    marked = core.delete_namespaced_pod("p", "default")
    assert marked.metadata.deletion_grace_period_seconds == 30 and marked.metadata.deletion_timestamp
    assert core.read_namespaced_pod(
        "p", "default"
    ).metadata.deletion_timestamp  # still there (no kubelet yet)
    core.delete_namespaced_pod("p", "default", grace_period_seconds=0)  # what a kubelet sends
    assert core.list_namespaced_pod("default", field_selector="spec.nodeName=n1").items == []


def test_configmap_secret_service_event_crud(core: client.CoreV1Api) -> None:
    cm = core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg"), data={"a": "1"})
    )
    cm.data["b"] = "2"
    assert core.replace_namespaced_config_map("cfg", "default", cm).data == {"a": "1", "b": "2"}
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(
            "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="bad"), data={"bad key": "x"})
        )
    assert err.value.status == 422

    secret = core.create_namespaced_secret(
        "default",
        client.V1Secret(metadata=client.V1ObjectMeta(name="creds"), string_data={"password": "s3cret"}),
    )
    assert secret.type == "Opaque" and secret.string_data is None
    assert base64.b64decode(secret.data["password"]) == b"s3cret"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_secret(
            "default",
            client.V1Secret(
                metadata=client.V1ObjectMeta(name="pull"), type="kubernetes.io/dockerconfigjson", data={}
            ),
        )
    assert status_of(err.value)["details"]["causes"][0]["field"] == "data[.dockerconfigjson]"
    assert [
        s.metadata.name for s in core.list_namespaced_secret("default", field_selector="type=Opaque").items
    ] == ["creds"]

    svc = core.create_namespaced_service(
        "default",
        client.V1Service(
            metadata=client.V1ObjectMeta(name="nexus"),
            spec=client.V1ServiceSpec(selector={"app": "nexus"}, ports=[client.V1ServicePort(port=8081)]),
        ),
    )
    assert svc.spec.cluster_ip.startswith("10.100.") and svc.spec.cluster_ip != "10.100.0.1"
    assert svc.spec.ports[0].target_port == 8081 and svc.spec.ports[0].protocol == "TCP"
    assert core.delete_namespaced_service("nexus", "default").metadata.name == "nexus"  # returns the object

    event = core.create_namespaced_event(
        "default",
        client.CoreV1Event(
            metadata=client.V1ObjectMeta(name="web.1"),
            reason="Pulled",
            message="pulled image",
            type="Normal",
            involved_object=client.V1ObjectReference(kind="Pod", name="web", namespace="default"),
        ),
    )
    assert event.reason == "Pulled"
    listed = core.list_namespaced_event("default", field_selector="involvedObject.name=web,reason=Pulled")
    assert [e.metadata.name for e in listed.items] == ["web.1"]
    assert core.list_namespaced_event("default", field_selector="involvedObject.kind=Node").items == []


def test_ingress_crud(api: client.ApiClient) -> None:
    net = client.NetworkingV1Api(api)
    ing = client.V1Ingress(
        metadata=client.V1ObjectMeta(name="nexus"),
        spec=client.V1IngressSpec(
            rules=[
                client.V1IngressRule(
                    host="nexus.lab",
                    http=client.V1HTTPIngressRuleValue(
                        paths=[
                            client.V1HTTPIngressPath(
                                path="/",
                                path_type="Prefix",
                                backend=client.V1IngressBackend(
                                    service=client.V1IngressServiceBackend(
                                        name="nexus", port=client.V1ServiceBackendPort(number=8081)
                                    )
                                ),
                            )
                        ]
                    ),
                )
            ]
        ),
    )
    created = net.create_namespaced_ingress("default", ing)
    assert created.metadata.generation == 1
    patched = net.patch_namespaced_ingress("nexus", "default", {"spec": {"rules": [{"host": "other.lab"}]}})
    assert patched.metadata.generation == 2 and patched.spec.rules[0].host == "other.lab"
    assert [i.metadata.name for i in net.list_ingress_for_all_namespaces().items] == ["nexus"]
    net.delete_namespaced_ingress("nexus", "default")
    assert net.list_namespaced_ingress("default").items == []


def test_job_crud_defaults_and_strategic_merge(api: client.ApiClient) -> None:
    batch = client.BatchV1Api(api)
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="probe"),
        spec=client.V1JobSpec(
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    containers=[
                        client.V1Container(
                            name="pull", image="busybox", env=[client.V1EnvVar(name="A", value="1")]
                        )
                    ],
                )
            )
        ),
    )
    created = batch.create_namespaced_job("default", job)
    uid = created.metadata.uid
    assert created.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": uid}
    assert created.spec.template.metadata.labels["job-name"] == "probe"
    assert (created.spec.backoff_limit, created.spec.completions, created.spec.parallelism) == (6, 1, 1)

    # typed patch = strategic merge: env merged by name, container kept
    patched = batch.patch_namespaced_job("probe", "default", {"metadata": {"labels": {"run": "1"}}})
    assert patched.metadata.labels["run"] == "1"
    with pytest.raises(ApiException) as err:
        batch.patch_namespaced_job(
            "probe",
            "default",
            {
                "spec": {
                    "template": {
                        "spec": {"containers": [{"name": "pull", "env": [{"name": "B", "value": "2"}]}]}
                    }
                }
            },
        )
    assert err.value.status == 422  # the template of a (non-suspended) Job is immutable
    assert status_of(err.value)["details"]["causes"][0]["field"] == "spec.template"

    status = batch.read_namespaced_job_status("probe", "default")
    status.status = client.V1JobStatus(succeeded=1)
    assert batch.replace_namespaced_job_status("probe", "default", status).status.succeeded == 1

    with pytest.raises(ApiException) as err:
        batch.create_namespaced_job(
            "default",
            client.V1Job(
                metadata=client.V1ObjectMeta(name="bad"),
                spec=client.V1JobSpec(
                    template=client.V1PodTemplateSpec(
                        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")])
                    )
                ),
            ),
        )
    body = status_of(err.value)
    assert body["message"] == (
        'Job.batch "bad" is invalid: spec.template.spec.restartPolicy: Unsupported value: '
        '"Always": supported values: "OnFailure", "Never"'
    )
    deleted = batch.delete_namespaced_job("probe", "default")
    assert deleted["status"] == "Success" and deleted["details"] == {
        "name": "probe",
        "group": "batch",
        "kind": "jobs",
        "uid": uid,
    }


# -- custom resources ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("group", "version", "plural", "body"),
    KARPENTER_OBJECTS,
    ids=[f"{p}-{v}" for _, v, p, _ in KARPENTER_OBJECTS],
)
def test_karpenter_kind_crud(
    custom: client.CustomObjectsApi, group: str, version: str, plural: str, body: dict[str, Any]
) -> None:
    name = body["metadata"]["name"]
    created = custom.create_cluster_custom_object(group, version, plural, body)  # the client maps only 201
    assert created["metadata"]["uid"] and created["metadata"]["generation"] == 1
    assert created["apiVersion"] == f"{group}/{version}"
    got = custom.get_cluster_custom_object(group, version, plural, name)
    assert got["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    labelled = custom.patch_cluster_custom_object(
        group, version, plural, name, {"metadata": {"labels": {"t": "a"}}}
    )
    assert labelled["metadata"]["generation"] == 1  # metadata changes do not bump generation
    listed = custom.list_cluster_custom_object(group, version, plural, label_selector="t=a")
    assert [o["metadata"]["name"] for o in listed["items"]] == [name]
    labelled["metadata"]["annotations"] = {"note": "x"}
    replaced = custom.replace_cluster_custom_object(group, version, plural, name, labelled)
    assert replaced["metadata"]["annotations"] == {"note": "x"}
    deleted = custom.delete_cluster_custom_object(group, version, plural, name)
    assert deleted["status"] == "Success" and deleted["details"]["kind"] == plural
    with pytest.raises(ApiException) as err:
        custom.get_cluster_custom_object(group, version, plural, name)
    assert status_of(err.value)["message"] == f'{plural}.{group} "{name}" not found'


def test_custom_resources_are_cluster_scoped(kube: KubeStandIn) -> None:
    r = httpx.post(f"{kube.url}/apis/karpenter.sh/v1/namespaces/default/nodepools", json=nodepool_v1())
    assert r.status_code == 404
    assert r.json()["message"] == "the server could not find the requested resource"


def test_server_side_apply_creates_then_merges(custom: client.CustomObjectsApi, kube: KubeStandIn) -> None:
    args = (KARPENTER_AWS, "v1", "ec2nodeclasses", "default")
    result = custom.patch_cluster_custom_object(
        *args,
        ec2nodeclass(),
        _content_type="application/apply-patch+yaml",
        field_manager="runbook",
        force=True,
    )
    assert result is None  # 201 Created, which patch_cluster_custom_object does not map
    assert (
        kube.requests[-1].status == 201 and kube.requests[-1].content_type == "application/apply-patch+yaml"
    )
    first = custom.get_cluster_custom_object(*args)
    managed = first["metadata"]["managedFields"]
    assert [(m["manager"], m["operation"]) for m in managed] == [("runbook", "Apply")]
    assert "f:metadataOptions" not in managed[0]["fieldsV1"]["f:spec"]  # defaults are not the applier's
    assert first["spec"]["metadataOptions"]["httpTokens"] == "required"

    again = custom.patch_cluster_custom_object(
        *args,
        ec2nodeclass(),
        _content_type="application/apply-patch+yaml",
        field_manager="runbook",
        force=True,
    )
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]  # no-op apply
    changed = custom.patch_cluster_custom_object(
        *args,
        ec2nodeclass(userData="#!/bin/bash\n"),
        _content_type="application/apply-patch+yaml",
        field_manager="runbook",
        force=True,
    )
    assert changed["spec"]["userData"] == "#!/bin/bash\n" and changed["metadata"]["generation"] == 2
    dropped = custom.patch_cluster_custom_object(
        *args,
        ec2nodeclass(),
        _content_type="application/apply-patch+yaml",
        field_manager="runbook",
        force=True,
    )
    assert "userData" not in dropped["spec"]  # a field the applier stops sending is removed

    custom.patch_cluster_custom_object(*args, {"spec": {"role": "Edited"}})  # another manager takes spec.role
    with pytest.raises(ApiException) as err:
        custom.patch_cluster_custom_object(
            *args, ec2nodeclass(), _content_type="application/apply-patch+yaml", field_manager="runbook"
        )
    body = status_of(err.value)
    assert err.value.status == 409 and body["reason"] == "Conflict"
    assert body["details"]["causes"][0]["field"] == ".spec.role"
    assert body["message"].startswith(
        'Apply failed with 1 conflict: conflict with "OpenAPI-Generator" using karpenter.k8s.aws/v1'
    )
    with pytest.raises(ApiException) as err:
        custom.patch_cluster_custom_object(
            *args, ec2nodeclass(), _content_type="application/apply-patch+yaml"
        )
    assert status_of(err.value)["message"] == (
        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch'
    )


def test_json_patch_and_unsupported_strategic_merge_on_custom_resources(
    custom: client.CustomObjectsApi, kube: KubeStandIn
) -> None:
    custom.create_cluster_custom_object(KARPENTER_AWS, "v1", "ec2nodeclasses", ec2nodeclass())
    patched = custom.patch_cluster_custom_object(
        KARPENTER_AWS,
        "v1",
        "ec2nodeclasses",
        "default",
        [
            {"op": "replace", "path": "/spec/role", "value": "NewRole"},
            {"op": "add", "path": "/spec/subnetSelectorTerms/-", "value": {"id": "subnet-1"}},
        ],
        _content_type="application/json-patch+json",
    )
    assert patched["spec"]["role"] == "NewRole" and patched["spec"]["subnetSelectorTerms"][-1] == {
        "id": "subnet-1"
    }
    assert kube.requests[-1].content_type == "application/json-patch+json"
    r = httpx.patch(
        f"{kube.url}/apis/karpenter.k8s.aws/v1/ec2nodeclasses/default",
        content=b"{}",
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    )
    assert r.status_code == 415 and r.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        "reason": "UnsupportedMediaType",
        "details": {},
        "code": 415,
    }


def test_invalid_ec2nodeclass_is_rejected_with_field_causes(custom: client.CustomObjectsApi) -> None:
    with pytest.raises(ApiException) as err:
        custom.create_cluster_custom_object(KARPENTER_AWS, "v1", "ec2nodeclasses", ec2nodeclass(role=42))
    assert err.value.status == 422
    assert status_of(err.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'EC2NodeClass.karpenter.k8s.aws "default" is invalid: '
        'spec.role: Invalid value: "integer": '
        'spec.role in body must be of type string: "integer"',
        "reason": "Invalid",
        "details": {
            "name": "default",
            "group": "karpenter.k8s.aws",
            "kind": "EC2NodeClass",
            "causes": [
                {
                    "reason": "FieldValueTypeInvalid",
                    "message": 'Invalid value: "integer": spec.role in body must be of '
                    'type string: "integer"',
                    "field": "spec.role",
                }
            ],
        },
        "code": 422,
    }
    bad = ec2nodeclass()
    del bad["spec"]["subnetSelectorTerms"]
    bad["spec"]["amiSelectorTerms"] = "al2023"
    with pytest.raises(ApiException) as err:
        custom.create_cluster_custom_object(KARPENTER_AWS, "v1", "ec2nodeclasses", bad)
    fields = {c["field"]: c["reason"] for c in status_of(err.value)["details"]["causes"]}
    assert fields == {
        "spec.amiSelectorTerms": "FieldValueTypeInvalid",
        "spec.subnetSelectorTerms": "FieldValueRequired",
    }


def test_unknown_fields_strict_is_400_default_warns_and_prunes(kube: KubeStandIn) -> None:
    url = f"{kube.url}/apis/karpenter.k8s.aws/v1/ec2nodeclasses"
    r = httpx.post(url + "?fieldValidation=Strict", json=ec2nodeclass(rolez="typo"))
    assert r.status_code == 400 and r.json()["message"] == 'strict decoding error: unknown field "spec.rolez"'
    r = httpx.post(url, json=ec2nodeclass(rolez="typo"))
    assert r.status_code == 201 and "rolez" not in r.json()["spec"]
    assert r.headers.get_list("warning") == ['299 - "unknown field \\"spec.rolez\\""']
    # built-in kinds too (the server decodes them into Go structs)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "datas": {"a": "1"}}
    r = httpx.post(f"{kube.url}/api/v1/namespaces/default/configmaps?fieldValidation=Strict", json=cm)
    assert r.status_code == 400 and r.json()["message"] == 'strict decoding error: unknown field "datas"'
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "imagePullPolicyy": "Always"}]},
    }
    r = httpx.post(f"{kube.url}/api/v1/namespaces/default/pods?fieldValidation=Ignore", json=pod)
    assert r.status_code == 201 and "imagePullPolicyy" not in r.json()["spec"]["containers"][0]
    assert "warning" not in r.headers


def test_label_and_field_selectors_on_lists(custom: client.CustomObjectsApi, core: client.CoreV1Api) -> None:
    for name, team in (("a", "blue"), ("b", "green"), ("c", None)):
        body = ec2nodeclass(name)
        if team:
            body["metadata"]["labels"] = {"team": team}
        custom.create_cluster_custom_object(KARPENTER_AWS, "v1", "ec2nodeclasses", body)

    def names(**kw: str) -> list[str]:
        return [
            o["metadata"]["name"]
            for o in custom.list_cluster_custom_object(KARPENTER_AWS, "v1", "ec2nodeclasses", **kw)["items"]
        ]

    assert names(label_selector="team=blue") == ["a"]
    assert names(label_selector="team==blue") == ["a"]
    assert names(label_selector="team!=blue") == ["b", "c"]
    assert names(label_selector="team in (blue,green)") == ["a", "b"]
    assert names(label_selector="team notin (blue)") == ["b", "c"]
    assert names(label_selector="team") == ["a", "b"]
    assert names(label_selector="!team") == ["c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    with pytest.raises(ApiException) as err:
        names(field_selector="spec.role=x")
    assert status_of(err.value)["message"] == (
        '"spec.role" is not a known field selector: only "metadata.name", "metadata.namespace"'
    )
    with pytest.raises(ApiException) as err:
        names(label_selector="team in (blue")
    assert err.value.status == 400

    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="other")))
    for ns in ("default", "other"):
        core.create_namespaced_config_map(
            ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c", labels={"ns": ns}))
        )
    everywhere = core.list_config_map_for_all_namespaces(label_selector="ns")
    assert sorted(c.metadata.namespace for c in everywhere.items) == ["default", "other"]
    assert [
        c.metadata.name
        for c in core.list_config_map_for_all_namespaces(field_selector="metadata.namespace=other").items
    ] == ["c"]
    assert int(everywhere.metadata.resource_version) >= int(everywhere.items[-1].metadata.resource_version)


def test_list_pagination_with_limit_and_continue(core: client.CoreV1Api) -> None:
    for i in range(5):
        core.create_namespaced_config_map(
            "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"c{i}"))
        )
    first = core.list_namespaced_config_map("default", limit=2)
    assert [c.metadata.name for c in first.items] == ["c0", "c1"] and first.metadata.remaining_item_count == 3
    second = core.list_namespaced_config_map("default", limit=10, _continue=first.metadata._continue)
    assert [c.metadata.name for c in second.items] == ["c2", "c3", "c4"] and not second.metadata._continue


def test_optimistic_concurrency(custom: client.CustomObjectsApi, core: client.CoreV1Api) -> None:
    created = custom.create_cluster_custom_object(KARPENTER, "v1", "nodepools", nodepool_v1())
    fresh = json.loads(json.dumps(created))
    fresh["spec"]["weight"] = 10
    updated = custom.replace_cluster_custom_object(KARPENTER, "v1", "nodepools", "default", fresh)
    assert updated["metadata"]["generation"] == 2  # spec change
    stale = json.loads(json.dumps(created))
    stale["spec"]["weight"] = 20
    with pytest.raises(ApiException) as err:
        custom.replace_cluster_custom_object(KARPENTER, "v1", "nodepools", "default", stale)
    assert status_of(err.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'Operation cannot be fulfilled on nodepools.karpenter.sh "default": '
        "the object has been modified; "
        "please apply your changes to the latest version and try again",
        "reason": "Conflict",
        "details": {"name": "default", "group": "karpenter.sh", "kind": "nodepools"},
        "code": 409,
    }
    unconditional = json.loads(json.dumps(updated))
    del unconditional["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as err:  # custom resources refuse updates without a resourceVersion
        custom.replace_cluster_custom_object(KARPENTER, "v1", "nodepools", "default", unconditional)
    assert err.value.status == 422 and status_of(err.value)["message"] == (
        'nodepools.karpenter.sh "default" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be '
        "specified for an update"
    )
    cm = core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"))
    )
    cm.metadata.resource_version = None  # built-in kinds allow unconditional updates
    cm.data = {"k": "v"}
    assert core.replace_namespaced_config_map("c", "default", cm).data == {"k": "v"}


def test_status_subresource_separates_spec_and_status(custom: client.CustomObjectsApi) -> None:
    body = nodepool_v1()
    body["status"] = {"conditions": []}
    created = custom.create_cluster_custom_object(KARPENTER, "v1", "nodepools", body)
    assert "status" not in created  # create ignores status when the status subresource is enabled
    condition = {
        "type": "Ready",
        "status": "True",
        "reason": "Ready",
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    after = custom.patch_cluster_custom_object_status(
        KARPENTER,
        "v1",
        "nodepools",
        "default",
        {"status": {"conditions": [condition]}, "spec": {"weight": 50}},
    )
    assert after["status"]["conditions"] == [condition] and "weight" not in after["spec"]
    assert after["metadata"]["generation"] == 1
    main = custom.patch_cluster_custom_object(
        KARPENTER, "v1", "nodepools", "default", {"status": {"conditions": []}, "spec": {"weight": 50}}
    )
    assert main["status"]["conditions"] == [condition] and main["spec"]["weight"] == 50
    assert main["metadata"]["generation"] == 2


def test_one_object_served_at_both_versions_of_a_multi_version_crd(custom: client.CustomObjectsApi) -> None:
    custom.create_cluster_custom_object(KARPENTER_AWS, "v1beta1", "ec2nodeclasses", KARPENTER_OBJECTS[1][3])
    as_v1 = custom.get_cluster_custom_object(KARPENTER_AWS, "v1", "ec2nodeclasses", "nc-v1beta1")
    assert as_v1["apiVersion"] == "karpenter.k8s.aws/v1"  # conversion "None": apiVersion rewritten only
    assert [
        o["metadata"]["name"]
        for o in custom.list_cluster_custom_object(KARPENTER_AWS, "v1beta1", "ec2nodeclasses")["items"]
    ] == ["nc-v1beta1"]


def test_finalizers_hold_deletion_until_cleared(custom: client.CustomObjectsApi, kube: KubeStandIn) -> None:
    body = nodepool_v1()
    body["metadata"]["finalizers"] = ["karpenter.sh/termination"]
    custom.create_cluster_custom_object(KARPENTER, "v1", "nodepools", body)
    marked = custom.delete_cluster_custom_object(KARPENTER, "v1", "nodepools", "default")
    assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["deletionGracePeriodSeconds"] == 0
    assert marked["metadata"]["generation"] == 2  # markAsDeleting bumps generation
    again = custom.delete_cluster_custom_object(KARPENTER, "v1", "nodepools", "default")
    assert again["metadata"]["resourceVersion"] == marked["metadata"]["resourceVersion"]  # idempotent
    current = custom.get_cluster_custom_object(KARPENTER, "v1", "nodepools", "default")
    current["metadata"]["finalizers"].append("x.io/late")
    with pytest.raises(ApiException) as err:
        custom.replace_cluster_custom_object(KARPENTER, "v1", "nodepools", "default", current)
    assert "no new finalizers can be added if the object is being deleted" in status_of(err.value)["message"]
    seen: list[str] = []
    kube.on_change(lambda event, obj: seen.append(event))
    custom.patch_cluster_custom_object(
        KARPENTER, "v1", "nodepools", "default", {"metadata": {"finalizers": None}}
    )
    assert seen == ["DELETED"]
    with pytest.raises(ApiException) as err:
        custom.get_cluster_custom_object(KARPENTER, "v1", "nodepools", "default")
    assert err.value.status == 404


def test_namespace_deletion_removes_content_and_refuses_new_content(core: client.CoreV1Api) -> None:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="tmp")))
    core.create_namespaced_config_map(
        "tmp", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="held", finalizers=["example.com/hold"]))
    )
    core.create_namespaced_secret("tmp", client.V1Secret(metadata=client.V1ObjectMeta(name="s")))
    answer = core.delete_namespace("tmp")
    assert answer["status"]["phase"] == "Terminating"
    assert core.list_namespaced_secret("tmp").items == []
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("tmp", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="new")))
    body = status_of(err.value)
    assert err.value.status == 403 and body["message"] == (
        'configmaps "new" is forbidden: unable to create new content in namespace tmp because it is being '
        "terminated"
    )
    assert body["details"]["causes"][0]["reason"] == "NamespaceTerminating"
    core.patch_namespaced_config_map(
        "held", "tmp", {"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/hold"]}}
    )
    with pytest.raises(ApiException) as err:
        core.read_namespace("tmp")
    assert err.value.status == 404
    with pytest.raises(ApiException) as err:
        core.delete_namespace("default")
    assert (
        status_of(err.value)["message"]
        == 'namespaces "default" is forbidden: this namespace may not be deleted'
    )
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(
            "missing", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"))
        )
    assert status_of(err.value)["details"] == {"name": "missing", "kind": "namespaces"}


def test_namespace_spec_finalizers_wait_for_the_finalize_subresource(core: client.CoreV1Api) -> None:
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name="held"),
            spec=client.V1NamespaceSpec(finalizers=["example.com/cleanup"]),
        )
    )
    core.delete_namespace("held")
    ns = core.read_namespace("held")
    assert ns.status.phase == "Terminating" and ns.spec.finalizers == ["example.com/cleanup"]
    ns.spec.finalizers = []
    core.replace_namespace_finalize("held", ns)  # PUT namespaces/held/finalize, as a controller does
    with pytest.raises(ApiException) as err:
        core.read_namespace("held")
    assert err.value.status == 404


def test_generate_name_and_name_validation(core: client.CoreV1Api, custom: client.CustomObjectsApi) -> None:
    made = core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name="probe-"))
    )
    assert made.metadata.name.startswith("probe-") and len(made.metadata.name) == len("probe-") + 5
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta()))
    assert status_of(err.value)["message"] == (
        'ConfigMap "" is invalid: metadata.name: Required value: name or generateName is required'
    )
    with pytest.raises(ApiException) as err:
        core.create_namespaced_service(
            "default",
            client.V1Service(
                metadata=client.V1ObjectMeta(name="1bad"),
                spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=80)]),
            ),
        )
    assert "a DNS-1035 label must consist of" in status_of(err.value)["message"]
    with pytest.raises(ApiException) as err:
        custom.create_cluster_custom_object(KARPENTER_AWS, "v1", "ec2nodeclasses", ec2nodeclass("Bad_Name"))
    assert status_of(err.value)["details"]["causes"][0]["field"] == "metadata.name"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(
            "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=made.metadata.name))
        )
    assert status_of(err.value)["reason"] == "AlreadyExists"


def test_dry_run_changes_nothing(custom: client.CustomObjectsApi, kube: KubeStandIn) -> None:
    rv = kube.store.resource_version
    answer = custom.create_cluster_custom_object(
        KARPENTER_AWS, "v1", "ec2nodeclasses", ec2nodeclass(), dry_run="All"
    )
    assert answer["metadata"]["name"] == "default" and "resourceVersion" not in answer["metadata"]
    assert kube.store.resource_version == rv
    assert custom.list_cluster_custom_object(KARPENTER_AWS, "v1", "ec2nodeclasses")["items"] == []


# -- watch ---------------------------------------------------------------------------------------
def test_watch_streams_events_and_ends_at_timeout(
    custom: client.CustomObjectsApi, kubeconfig: Path, kube: KubeStandIn
) -> None:
    custom.create_cluster_custom_object(KARPENTER, "v1", "nodepools", nodepool_v1("first"))
    watcher_client = config.new_client_from_config(
        config_file=str(kubeconfig)
    )  # the watch has its own client
    second_api = client.CustomObjectsApi(watcher_client)
    started = threading.Event()

    def writer() -> None:
        started.wait(5)
        custom.create_cluster_custom_object(KARPENTER, "v1", "nodepools", nodepool_v1("second"))
        custom.patch_cluster_custom_object(KARPENTER, "v1", "nodepools", "second", {"spec": {"weight": 3}})
        custom.delete_cluster_custom_object(KARPENTER, "v1", "nodepools", "first")

    events: list[tuple[str, str]] = []
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        stream = watch.Watch().stream(
            second_api.list_cluster_custom_object, KARPENTER, "v1", "nodepools", timeout_seconds=2
        )
        for event in stream:
            events.append((event["type"], event["object"]["metadata"]["name"]))
            started.set()
    finally:
        started.set()
        thread.join()
        watcher_client.close()
    assert events == [("ADDED", "first"), ("ADDED", "second"), ("MODIFIED", "second"), ("DELETED", "first")]
    assert any(r.query == "timeoutSeconds=2&watch=true" for r in kube.requests)


def test_watch_resumes_from_resource_version(custom: client.CustomObjectsApi) -> None:
    custom.create_cluster_custom_object(KARPENTER, "v1", "nodepools", nodepool_v1("a"))
    rv = custom.list_cluster_custom_object(KARPENTER, "v1", "nodepools")["metadata"]["resourceVersion"]
    custom.create_cluster_custom_object(KARPENTER, "v1", "nodepools", nodepool_v1("b"))
    custom.patch_cluster_custom_object(
        KARPENTER, "v1", "nodepools", "a", {"metadata": {"labels": {"x": "1"}}}
    )
    events = [
        (e["type"], e["object"]["metadata"]["name"])
        for e in watch.Watch().stream(
            custom.list_cluster_custom_object,
            KARPENTER,
            "v1",
            "nodepools",
            resource_version=rv,
            timeout_seconds=1,
        )
    ]
    assert events == [("ADDED", "b"), ("MODIFIED", "a")]
    # a label selector turns objects entering/leaving the selection into ADDED/DELETED, as the watch cache
    # does
    selected = [
        (e["type"], e["object"]["metadata"]["name"])
        for e in watch.Watch().stream(
            custom.list_cluster_custom_object,
            KARPENTER,
            "v1",
            "nodepools",
            resource_version=rv,
            label_selector="x=1",
            timeout_seconds=1,
        )
    ]
    assert selected == [("ADDED", "a")]


def test_namespaced_and_legacy_watch_paths(kube: KubeStandIn) -> None:
    kube.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    for ns, name in (("default", "a"), ("default", "b"), ("other", "a")):
        kube.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}})

    def watched(path: str) -> list[tuple[str, str]]:
        with httpx.stream("GET", f"{kube.url}{path}{'&' if '?' in path else '?'}timeoutSeconds=1") as r:
            return [
                (e["object"]["metadata"]["namespace"], e["object"]["metadata"]["name"])
                for e in map(json.loads, filter(None, r.iter_lines()))
            ]

    assert watched("/api/v1/namespaces/default/configmaps?watch=true") == [("default", "a"), ("default", "b")]
    assert watched("/api/v1/watch/configmaps") == [("default", "a"), ("default", "b"), ("other", "a")]
    assert watched("/api/v1/watch/namespaces/default/configmaps/b") == [("default", "b")]


def test_watch_from_a_resource_version_older_than_history_is_410(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first = KubeStandIn(state)
    first.put(nodepool_v1())
    first.stop()
    restarted = KubeStandIn(state).start()
    try:
        with httpx.stream(
            "GET",
            f"{restarted.url}/apis/karpenter.sh/v1/nodepools",
            params={"watch": "1", "resourceVersion": "2", "timeoutSeconds": "1"},
        ) as r:
            assert r.status_code == 200 and r.headers["transfer-encoding"] == "chunked"
            lines = [json.loads(line) for line in r.iter_lines() if line]
    finally:
        restarted.stop()
    current = restarted.store.resource_version
    assert lines == [
        {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"too old resource version: 2 ({current})",
                "reason": "Expired",
                "code": 410,
            },
        }
    ]


# -- persistence, in-process API, hooks, request log ---------------------------------------------
def test_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "kube" / "state.json"
    first = KubeStandIn(state).start()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", first.url)
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    created = client.CustomObjectsApi(api_client).create_cluster_custom_object(
        KARPENTER_AWS, "v1", "ec2nodeclasses", ec2nodeclass()
    )
    api_client.close()
    first.stop()
    assert json.loads(state.read_text())["format"] == 1
    assert not list(state.parent.glob("*.tmp"))  # atomic writes leave no temporaries

    second = KubeStandIn(state).start()
    try:
        again = second.get("karpenter.k8s.aws/v1", "EC2NodeClass", "default")
        assert again is not None and again["metadata"]["uid"] == created["metadata"]["uid"]
        assert second.get("v1", "Namespace", "kube-system") is not None
        second.put(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after", "namespace": "default"}}
        )
        assert int(second.get("v1", "ConfigMap", "after", "default")["metadata"]["resourceVersion"]) > int(
            created["metadata"]["resourceVersion"]
        )  # the revision counter continues
    finally:
        second.stop()


def test_in_process_put_get_list_delete_and_hooks(kube: KubeStandIn) -> None:
    seen: list[tuple[str, str]] = []
    unsubscribe = kube.on_change(lambda event, obj: seen.append((event, obj["metadata"]["name"])))
    node = kube.put(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n1", "labels": {"pool": "a"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }
    )
    assert node["status"]["conditions"][0]["status"] == "True"
    claim = kube.put(
        {
            "apiVersion": "karpenter.sh/v1",
            "kind": "NodeClaim",
            "metadata": {"name": "c1"},
            "spec": KARPENTER_OBJECTS[4][3]["spec"],
            "status": {"nodeName": "n1"},
        }
    )
    assert claim["status"] == {"nodeName": "n1"}  # seeding keeps status
    kube.put({**claim, "status": {"nodeName": "n2"}})
    assert kube.get("karpenter.sh/v1", "NodeClaim", "c1")["status"]["nodeName"] == "n2"
    assert [n["metadata"]["name"] for n in kube.list("v1", "Node", label_selector="pool=a")] == ["n1"]
    assert kube.get("v1", "Node", "missing") is None
    kube.delete("v1", "Node", "n1")
    unsubscribe()
    kube.put({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n9"}})
    assert seen == [("ADDED", "n1"), ("ADDED", "c1"), ("MODIFIED", "c1"), ("DELETED", "n1")]
    with pytest.raises(Exception) as err:
        kube.put(
            {
                "apiVersion": "karpenter.k8s.aws/v1",
                "kind": "EC2NodeClass",
                "metadata": {"name": "x"},
                "spec": {"role": 1},
            }
        )
    assert getattr(err.value, "code", None) == 422


def test_request_log_records_method_path_content_type_and_status(
    kube: KubeStandIn, custom: client.CustomObjectsApi
) -> None:
    kube.clear_requests()
    custom.create_cluster_custom_object(KARPENTER_AWS, "v1", "ec2nodeclasses", ec2nodeclass())
    custom.patch_cluster_custom_object(
        KARPENTER_AWS, "v1", "ec2nodeclasses", "default", {"spec": {"role": "r"}}
    )
    with pytest.raises(ApiException):
        custom.get_cluster_custom_object(KARPENTER_AWS, "v1", "ec2nodeclasses", "nope")
    # the v37 client sends create bodies without a Content-Type; the apiserver then assumes JSON
    assert [(r.method, r.path, r.content_type, r.status) for r in kube.requests] == [
        ("POST", "/apis/karpenter.k8s.aws/v1/ec2nodeclasses", "", 201),
        ("PATCH", "/apis/karpenter.k8s.aws/v1/ec2nodeclasses/default", "application/merge-patch+json", 200),
        ("GET", "/apis/karpenter.k8s.aws/v1/ec2nodeclasses/nope", "", 404),
    ]


# -- HTTP-level answers --------------------------------------------------------------------------
def test_error_answers_for_bad_requests(kube: KubeStandIn) -> None:
    base = kube.url
    r = httpx.put(f"{base}/api/v1/namespaces/default/configmaps", json={})
    assert r.status_code == 405 and r.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "the server does not allow this method on the requested resource",
        "reason": "MethodNotAllowed",
        "details": {},
        "code": 405,
    }
    r = httpx.put(
        f"{base}/api/v1/namespaces/default/configmaps/a",
        json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}},
    )
    assert r.status_code == 400 and r.json()["reason"] == "BadRequest"
    assert r.json()["message"] == "the name of the object (b) does not match the name on the URL (a)"
    r = httpx.post(
        f"{base}/api/v1/namespaces/default/configmaps",
        json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "other"}},
    )
    assert r.status_code == 400
    r = httpx.post(
        f"{base}/apis/karpenter.k8s.aws/v1/ec2nodeclasses",
        json={**ec2nodeclass(), "apiVersion": "karpenter.k8s.aws/v1beta1"},
    )
    assert r.json()["message"] == (
        "the API version in the data (karpenter.k8s.aws/v1beta1) does not match the "
        "expected API version (karpenter.k8s.aws/v1)"
    )
    assert (
        httpx.get(f"{base}/api/v1/nothings").json()["message"]
        == "the server could not find the requested resource"
    )
    r = httpx.get(f"{base}/nowhere")
    assert r.status_code == 404 and r.text == "404 page not found\n"
    r = httpx.patch(
        f"{base}/api/v1/namespaces/default",
        params={"force": "true"},
        json={},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 422 and r.json()["message"] == (
        'PatchOptions.meta.k8s.io "" is invalid: force: Forbidden: may not be specified for non-apply patch'
    )
    assert httpx.get(f"{base}/version").json() == httpx.get(f"{base}/version/").json()
    assert httpx.get(f"{base}/healthz").text == "ok"


def test_kubectl_style_table_output(kube: KubeStandIn) -> None:
    kube.put(ec2nodeclass())
    r = httpx.get(
        f"{kube.url}/apis/karpenter.k8s.aws/v1/ec2nodeclasses",
        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"},
    )
    table = r.json()
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]][:4] == ["Name", "Ready", "Age", "Role"]
    assert (
        table["rows"][0]["cells"][0] == "default"
        and table["rows"][0]["cells"][3] == "KarpenterNodeRole-my-cluster"
    )
    # kubectl get -w: watch events carry Table rows too
    with httpx.stream(
        "GET",
        f"{kube.url}/api/v1/namespaces",
        params={"watch": "true", "timeoutSeconds": "1"},
        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
    ) as r:
        events = [json.loads(line) for line in r.iter_lines() if line]
    assert [(e["type"], e["object"]["kind"], e["object"]["rows"][0]["cells"][:2]) for e in events] == [
        ("ADDED", "Table", [ns, "Active"])
        for ns in ("default", "kube-node-lease", "kube-public", "kube-system")
    ]


def test_crd_profile_selects_the_served_versions() -> None:
    standin = KubeStandIn(crds="v1beta1").start()
    try:
        assert httpx.get(f"{standin.url}/apis/karpenter.sh/v1/nodepools").status_code == 404
        r = httpx.get(f"{standin.url}/apis/karpenter.sh")
        assert [v["version"] for v in r.json()["versions"]] == ["v1beta1"]
    finally:
        standin.stop()
