"""Repository resources: the generic list/get/delete/settings views and typed docker proxy and group CRUD.

Facts (contract.json repo.*; NP components/nexus-repository-services/.../rest/api/
AbstractRepositoriesApiResource.java, AbstractGroupRepositoriesApiResource.java,
AuthorizingRepositoryManagerImpl.java, repository/manager/internal/RepositoryManagerImpl.java):
- create 201 / update 204, no bodies; typed GET 200; DELETE 204; a missing repository on PUT or DELETE is 404
  with an empty body, on a typed GET (also when format or type differ) 404 `"Repository not found"`.
- Typed resources need authentication; the admin permission `nexus:repository-admin:<format>:<name>:<action>`
  is checked after the body validated (AuthorizingRepositoryManager), so a forbidden user with a bad body
  still sees the 400.
- Lookups by name ignore case (RepositoryManagerImpl keys repositories by lower-cased name); a second
  repository whose name differs only in case is refused with ValidationException "Repository has created
  already!", which the resource wraps like every non-validation exception: 400 message object. The same
  wrapping turns "Renaming a repository is not supported" (body name != path) and the 3.68+ blob store
  checks ("Blob store not found", "You cannot change a repository’s blob store through the API") into
  400 message objects: ValidationErrorsException is not re-thrown by the resource's catch. (They are
  not validation lists: sonatype/nexus-public at aec50e47 answers them as message objects.)
- Docker hosted (openapi-subset DockerHostedRepositoryApiRequest): the same create/update/get rules;
  `storage.writePolicy` is required (ALLOW, ALLOW_ONCE, DENY). Pushes are not emulated: the lab stores
  images into a hosted repository directly (hosted.py) and the connector serves them.
- Group members must exist and be docker (ConstraintViolations on `memberNames`, a validation list);
  `writableMember` is PRO only. Deleting a repository removes it from every group
  (RepositoryManagerImpl.removeRepositoryFromAllGroups).
- Docker names must be lowercase from 3.89 (`PARAMETER arg0`, sonatyperepo#303). `indexUrl: ""` is rejected
  (`FIELD indexUrl`, terraform-provider-nexus#60). A connector port can serve one repository only
  (validatePortNotInUse, sonatype/nexus-oss PR#1596) [inferred still true; message text ours].
- GET documents write every unset value as an explicit null and never contain `password`, `bearerToken`
  (write-only, NP HttpClientConnectionAuthenticationAttributes) or `ecrAuth.secretAccessKey`.
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import urlsplit

from runbook_lab.nexus.errors import MessageError, StatusOnly, ValidationFailed
from runbook_lab.nexus.rest import Call, Response, Route
from runbook_lab.nexus.validation import DOCKER_GROUP, DOCKER_HOSTED, Violations, docker_proxy_spec, unique

INDEX_TYPES = ("HUB", "REGISTRY", "CUSTOM")
WRITE_POLICIES = ("ALLOW", "ALLOW_ONCE", "DENY")  # NP WritePolicy enum
BLOB_STORE_NOT_FOUND = "Blob store not found"
BLOB_STORE_CHANGE = "You cannot change a repository’s blob store through the API"
PRO_GROUP_DEPLOY = (
    "Deploying to groups is a PRO-licensed feature. See https://links.sonatype.com/product-nexus-repository"
)


# ------------------------------------------------------------------------------------------ lookup
def find(data: dict[str, Any], name: str) -> dict[str, Any] | None:
    """RepositoryManagerImpl.get: repositories are keyed by lower-cased name."""
    wanted = name.lower()
    return next((doc for key, doc in data["repositories"].items() if key.lower() == wanted), None)


def admin_permission(doc_or_format: dict[str, Any] | str, name: str, action: str) -> str:
    fmt = doc_or_format if isinstance(doc_or_format, str) else doc_or_format["format"]
    return f"nexus:repository-admin:{fmt}:{name}:{action}"


def view_permission(doc: dict[str, Any], action: str) -> str:
    return f"nexus:repository-view:{doc['format']}:{doc['name']}:{action}"


# ----------------------------------------------------------------------------------------- views
def repository_xo(call: Call, doc: dict[str, Any]) -> dict[str, Any]:
    attributes = {"proxy": {"remoteUrl": doc["proxy"]["remoteUrl"]}} if doc["type"] == "proxy" else {}
    out = {
        "name": doc["name"],
        "format": doc["format"],
        "type": doc["type"],
        "url": f"{call.base_url}/repository/{doc['name']}",
        "attributes": attributes,
    }
    if call.release.at_least("3.94"):
        out["online"] = doc["online"]  # RepositoryXO.online appears in the 3.94 spec
    return out


def _docker_view(docker: dict[str, Any], call: Call) -> dict[str, Any]:
    out = {
        "v1Enabled": docker["v1Enabled"],
        "forceBasicAuth": docker["forceBasicAuth"],
        "httpPort": docker.get("httpPort"),
        "httpsPort": docker.get("httpsPort"),
        "subdomain": docker.get("subdomain"),
    }
    if call.release.at_least("3.83"):
        out["pathEnabled"] = docker.get("pathEnabled")
    return out


def typed_view(call: Call, doc: dict[str, Any]) -> dict[str, Any]:
    """The typed GET document (DockerProxyApiRepository / DockerGroupApiRepository)."""
    out: dict[str, Any] = {
        "name": doc["name"],
        "format": doc["format"],
        "type": doc["type"],
        "url": f"{call.base_url}/repository/{doc['name']}",
        "online": doc["online"],
        "storage": dict(doc["storage"]),
    }
    if doc["type"] == "hosted":  # DockerHostedApiRepository
        out["cleanup"] = copy.deepcopy(doc.get("cleanup"))
        out["component"] = dict(doc.get("component") or {"proprietaryComponents": False})
        out["docker"] = _docker_view(doc["docker"], call)
        return out
    if doc["type"] == "group":
        group = {"memberNames": list(doc["group"]["memberNames"])}
        if call.state.edition == "PRO":
            group["writableMember"] = doc["group"].get("writableMember")
        out["group"] = group
        out["docker"] = _docker_view(doc["docker"], call)
        return out
    http = doc["httpClient"]
    auth = http.get("authentication")
    if auth is not None:  # password and bearerToken are write-only
        auth = {k: auth.get(k) for k in ("type", "username", "ntlmHost", "ntlmDomain")}
    docker_proxy = {
        k: doc["dockerProxy"].get(k)
        for k in ("indexType", "indexUrl", "cacheForeignLayers", "foreignLayerUrlWhitelist")
    }
    if call.release.at_least("3.94"):
        ecr = doc["dockerProxy"].get("ecrAuth")
        docker_proxy["ecrAuth"] = {k: v for k, v in ecr.items() if k != "secretAccessKey"} if ecr else None
    out.update(
        {
            "cleanup": copy.deepcopy(doc.get("cleanup")),
            "proxy": dict(doc["proxy"]),
            "negativeCache": dict(doc["negativeCache"]),
            "httpClient": {
                "blocked": http["blocked"],
                "autoBlock": http["autoBlock"],
                "connection": copy.deepcopy(http.get("connection")),
                "authentication": auth,
            },
            "routingRuleName": doc.get("routingRuleName"),
            "docker": _docker_view(doc["docker"], call),
            "dockerProxy": docker_proxy,
        }
    )
    if call.state.edition == "PRO" and doc.get("replication"):
        out["replication"] = dict(doc["replication"])
    return out


# -------------------------------------------------------------------------------- generic resources
def list_repositories(call: Call) -> Response:
    """No authentication needed; filtered to repositories the caller may browse (or administer)."""
    with call.state.read() as data:
        docs = sorted(data["repositories"].values(), key=lambda d: d["name"].lower())
        visible = [
            d
            for d in docs
            if call.permitted(view_permission(d, "browse"))
            or call.permitted(admin_permission(d, d["name"], "read"))
        ]
        return Response(200, [repository_xo(call, d) for d in visible])


def get_repository(call: Call) -> Response:
    """3.38+; read or browse on the repository or on a group containing it, else 403 (both empty)."""
    if not call.release.at_least("3.38"):
        raise StatusOnly(404)
    with call.state.read() as data:
        doc = find(data, call.params["name"])
        if doc is None:
            raise StatusOnly(404)
        scopes = [doc] + [
            g
            for g in data["repositories"].values()
            if g["type"] == "group" and doc["name"] in g["group"]["memberNames"]
        ]
        if not any(call.permitted(view_permission(s, a)) for s in scopes for a in ("read", "browse")):
            raise StatusOnly(403)
        return Response(200, repository_xo(call, doc))


def repository_settings(call: Call) -> Response:
    call.require_authentication()
    with call.state.read() as data:
        docs = sorted(data["repositories"].values(), key=lambda d: d["name"].lower())
        return Response(
            200, [typed_view(call, d) for d in docs if call.permitted(admin_permission(d, d["name"], "read"))]
        )


def delete_repository(call: Call) -> Response:
    call.require_authentication()
    with call.state.edit(repositories_changed=True) as data:
        doc = find(data, call.params["name"])
        if doc is None:
            raise StatusOnly(404)
        if not call.permitted(admin_permission(doc, doc["name"], "delete")):
            raise StatusOnly(403)
        name = doc["name"]
        del data["repositories"][name]
        data["components"].pop(name, None)
        for other in data["repositories"].values():
            if other["type"] == "group" and name in other["group"]["memberNames"]:
                other["group"]["memberNames"] = [m for m in other["group"]["memberNames"] if m != name]
    return Response(204)


# ----------------------------------------------------------------------------- docker validation
def _validate_docker_block(v: Violations, docker: dict[str, Any] | None) -> None:
    if docker is None:
        v.add("docker", "must not be null")
        return
    v.not_null(docker, "v1Enabled")
    v.not_null(docker, "forceBasicAuth")
    for key in ("httpPort", "httpsPort"):  # UI validator range (RepositoryFormValidators.js) [inferred]
        v.within(docker, key, 1, 65535)


def _validate_common(v: Violations, bean: dict[str, Any]) -> None:
    v.name(bean)
    v.not_null(bean, "online")
    if v.not_null(bean, "storage"):
        v.not_empty(bean["storage"], "blobStoreName")
        v.not_null(bean["storage"], "strictContentTypeValidation")


def _lowercase_rule(v: Violations, call: Call, bean: dict[str, Any]) -> None:
    name = bean.get("name")
    if call.release.at_least("3.89") and name and name != name.lower():
        v.add("arg0", "Docker repository names must be lowercase to support path-based routing")


def _validate_proxy(call: Call, bean: dict[str, Any]) -> None:
    v = Violations()
    _validate_common(v, bean)
    proxy = bean.get("proxy")
    if v.not_null(bean, "proxy"):
        if v.not_empty(proxy, "remoteUrl") and not _is_uri(proxy["remoteUrl"]):
            v.add("remoteUrl", "Invalid URI")  # @UriString [message inferred]
        v.not_null(proxy, "contentMaxAge")
        v.not_null(proxy, "metadataMaxAge")
    if v.not_null(bean, "negativeCache"):
        v.not_null(bean["negativeCache"], "enabled")
        v.not_null(bean["negativeCache"], "timeToLive")
    http = bean.get("httpClient")
    if v.not_null(bean, "httpClient"):
        v.not_null(http, "blocked")
        v.not_null(http, "autoBlock")
        if http.get("connection") is not None:
            v.within(http["connection"], "retries", 0, 10)
            v.within(http["connection"], "timeout", 1, 3600)
        if http.get("authentication") is not None:
            v.not_empty(http["authentication"], "type")
    _validate_docker_block(v, bean.get("docker"))
    dp = bean.get("dockerProxy")
    if v.not_null(bean, "dockerProxy"):
        if v.not_empty(dp, "indexType") and dp["indexType"].upper() not in INDEX_TYPES:
            v.add("indexType", f"must be one of {', '.join(INDEX_TYPES)}")  # [inferred]
        if dp.get("indexUrl") == "":
            v.add("indexUrl", "URL should be in the format 'http://www.example.com'", kind="FIELD")
    _lowercase_rule(v, call, bean)
    v.raise_if_any()


def _validate_group(call: Call, bean: dict[str, Any]) -> None:
    v = Violations()
    _validate_common(v, bean)
    if v.not_null(bean, "group"):
        v.not_empty(bean["group"], "memberNames")
    _validate_docker_block(v, bean.get("docker"))
    _lowercase_rule(v, call, bean)
    v.raise_if_any()


def _validate_hosted(call: Call, bean: dict[str, Any]) -> None:
    v = Violations()
    _validate_common(v, bean)
    storage = bean.get("storage") or {}
    if v.not_empty(storage, "writePolicy") and str(storage["writePolicy"]).upper() not in WRITE_POLICIES:
        v.add("writePolicy", f"must be one of {', '.join(WRITE_POLICIES)}")  # [inferred]
    _validate_docker_block(v, bean.get("docker"))
    _lowercase_rule(v, call, bean)
    v.raise_if_any()


def _check_members(call: Call, data: dict[str, Any], bean: dict[str, Any]) -> None:
    """AbstractGroupRepositoriesApiResource.validateRequest: ConstraintViolations on the members."""
    errors: list[tuple[str, str]] = []
    for member in bean["group"]["memberNames"]:
        doc = find(data, member)
        if doc is None:
            errors.append(("HelperBean.memberNames", f"Member repository does not exist: {member}"))
        elif doc["format"] != "docker":
            errors.append(
                (
                    "HelperBean.memberNames",
                    f"Member repository format does not match group repository format: {member}",
                )
            )
    writable = bean["group"].get("writableMember")
    if writable:
        if call.state.edition != "PRO":
            errors.append(("HelperBean.writableMember", PRO_GROUP_DEPLOY))
        elif find(data, writable) is None:
            errors.append(("HelperBean.writableMember", "Writable member repository does not exist"))
        else:
            errors.append(("HelperBean.writableMember", "Writable member must be a hosted repository"))
    if errors:
        raise ValidationFailed(errors)


def _is_uri(text: str) -> bool:
    try:
        parts = urlsplit(text)
    except ValueError:
        return False
    # java.net.URI refuses these characters unescaped
    return not any(c in text for c in ' "<>\\^`{|}') and (bool(parts.scheme) or not parts.netloc)


# -------------------------------------------------------------------------------------- documents
def _docker_doc(docker: dict[str, Any], call: Call) -> dict[str, Any]:
    out = {k: docker.get(k) for k in ("v1Enabled", "forceBasicAuth", "httpPort", "httpsPort", "subdomain")}
    if call.release.at_least("3.83"):
        out["pathEnabled"] = docker.get("pathEnabled")
    return out


def _proxy_document(call: Call, bean: dict[str, Any]) -> dict[str, Any]:
    routing = bean.get("routingRuleName" if call.release.at_least("3.94") else "routingRule")
    cleanup = bean.get("cleanup")
    policy_names = unique(cleanup.get("policyNames")) if cleanup else []
    proxy = {k: bean["proxy"][k] for k in ("remoteUrl", "contentMaxAge", "metadataMaxAge")}
    if call.release.at_least("3.94"):
        proxy["preserveEncodedCharacters"] = bool(bean["proxy"].get("preserveEncodedCharacters"))
    http = bean["httpClient"]
    dp = bean["dockerProxy"]
    docker_proxy = {
        "indexType": dp["indexType"].upper(),
        "indexUrl": dp.get("indexUrl"),
        "cacheForeignLayers": dp.get("cacheForeignLayers"),
        "foreignLayerUrlWhitelist": dp.get("foreignLayerUrlWhitelist"),
    }
    if call.release.at_least("3.94"):
        docker_proxy["ecrAuth"] = dp.get("ecrAuth")
    return {
        "name": bean["name"],
        "format": "docker",
        "type": "proxy",
        "online": bean["online"],
        "storage": {
            "blobStoreName": bean["storage"]["blobStoreName"],
            "strictContentTypeValidation": bean["storage"]["strictContentTypeValidation"],
        },
        "cleanup": {"policyNames": policy_names} if policy_names else None,
        "proxy": proxy,
        "negativeCache": dict(bean["negativeCache"]),
        "httpClient": {
            "blocked": http["blocked"],
            "autoBlock": http["autoBlock"],
            "connection": http.get("connection"),
            "authentication": http.get("authentication"),
        },
        "routingRuleName": routing,
        "replication": bean.get("replication") if call.state.edition == "PRO" else None,
        "docker": _docker_doc(bean["docker"], call),
        "dockerProxy": docker_proxy,
    }


def _hosted_document(call: Call, bean: dict[str, Any]) -> dict[str, Any]:
    cleanup = bean.get("cleanup")
    policy_names = unique(cleanup.get("policyNames")) if cleanup else []
    storage = bean["storage"]
    return {
        "name": bean["name"],
        "format": "docker",
        "type": "hosted",
        "online": bean["online"],
        "storage": {
            "blobStoreName": storage["blobStoreName"],
            "strictContentTypeValidation": storage["strictContentTypeValidation"],
            "writePolicy": storage["writePolicy"].upper(),
            "latestPolicy": bool(storage.get("latestPolicy")),
        },
        "cleanup": {"policyNames": policy_names} if policy_names else None,
        "component": {
            "proprietaryComponents": bool((bean.get("component") or {}).get("proprietaryComponents"))
        },
        "docker": _docker_doc(bean["docker"], call),
    }


def _group_document(call: Call, bean: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": bean["name"],
        "format": "docker",
        "type": "group",
        "online": bean["online"],
        "storage": {
            "blobStoreName": bean["storage"]["blobStoreName"],
            "strictContentTypeValidation": bean["storage"]["strictContentTypeValidation"],
        },
        "group": {
            "memberNames": unique(bean["group"]["memberNames"]),
            "writableMember": bean["group"].get("writableMember"),
        },
        "docker": _docker_doc(bean["docker"], call),
    }


def _check_blob_store(call: Call, data: dict[str, Any], doc: dict[str, Any], current: dict | None) -> None:
    if not call.release.at_least("3.68"):
        return
    wanted = doc["storage"]["blobStoreName"]
    if wanted not in data["blobStores"]:
        raise MessageError(400, BLOB_STORE_NOT_FOUND)
    if current is not None and current["storage"]["blobStoreName"] != wanted:
        raise MessageError(400, BLOB_STORE_CHANGE)


def _check_ports(call: Call, data: dict[str, Any], doc: dict[str, Any]) -> None:
    http_port, https_port = doc["docker"].get("httpPort"), doc["docker"].get("httpsPort")
    if http_port is not None and http_port == https_port:
        raise MessageError(400, f"HTTP and HTTPS connector ports must differ: {http_port}")
    main_port = call.handler.server.server_address[1]
    for port in (http_port, https_port):
        if port is None:
            continue
        if port == main_port:
            raise MessageError(400, f"Port {port} is already in use")
        for other in data["repositories"].values():
            if other["name"].lower() == doc["name"].lower() or other["format"] != "docker":
                continue
            if port in (other["docker"].get("httpPort"), other["docker"].get("httpsPort")):
                raise MessageError(400, f"Port {port} is already in use by repository {other['name']}")


# ------------------------------------------------------------------------------ typed CRUD
def _typed(kind: str):  # noqa: ANN202 - returns the four handlers of one repository type
    def spec(call: Call):  # noqa: ANN202
        if kind == "group":
            return DOCKER_GROUP
        if kind == "hosted":
            return DOCKER_HOSTED
        return docker_proxy_spec("routingRuleName" if call.release.at_least("3.94") else "routingRule")

    def validated(call: Call, data: dict[str, Any], bean: dict[str, Any]) -> dict[str, Any]:
        if kind == "group":
            _validate_group(call, bean)
            _check_members(call, data, bean)
            return _group_document(call, bean)
        if kind == "hosted":
            _validate_hosted(call, bean)
            return _hosted_document(call, bean)
        _validate_proxy(call, bean)
        return _proxy_document(call, bean)

    def create(call: Call) -> Response:
        call.require_authentication()
        bean = call.bind(spec(call))
        with call.state.edit(repositories_changed=True) as data:
            doc = validated(call, data, bean)
            _check_blob_store(call, data, doc, None)
            if not call.permitted(admin_permission("docker", doc["name"], "add")):
                raise StatusOnly(403)
            if find(data, doc["name"]) is not None:
                raise MessageError(400, "Repository has created already!")
            _check_ports(call, data, doc)
            data["repositories"][doc["name"]] = doc
        return Response(201)

    def update(call: Call) -> Response:
        call.require_authentication()
        bean = call.bind(spec(call))
        with call.state.edit(repositories_changed=True) as data:
            doc = validated(call, data, bean)
            if doc["name"] != call.params["name"]:
                raise MessageError(400, "Renaming a repository is not supported")
            current = find(data, doc["name"])
            if call.release.at_least("3.68") and doc["storage"]["blobStoreName"] not in data["blobStores"]:
                raise MessageError(400, BLOB_STORE_NOT_FOUND)
            if current is None:
                raise StatusOnly(404)
            _check_blob_store(call, data, doc, current)
            if not call.permitted(admin_permission(current, current["name"], "edit")):
                raise StatusOnly(403)
            if current["type"] != kind:  # [ours] Nexus keeps the old recipe; refusing is the honest stand-in
                raise MessageError(400, f"Repository {current['name']} is not a docker-{kind} repository")
            _check_ports(call, data, doc)
            doc["name"] = current["name"]
            data["repositories"][current["name"]] = doc
        return Response(204)

    def get(call: Call) -> Response:
        call.require_authentication()
        with call.state.read() as data:
            doc = find(data, call.params["name"])
            if doc is not None and not call.permitted(admin_permission(doc, doc["name"], "read")):
                doc = None  # getRepositoryWithAdmin filters what the user may not administer
            if doc is None or doc["format"] != "docker" or doc["type"] != kind:
                raise MessageError(404, "Repository not found", quoted=True)
            return Response(200, typed_view(call, doc))

    return create, update, get


_proxy_create, _proxy_update, _proxy_get = _typed("proxy")
_group_create, _group_update, _group_get = _typed("group")
_hosted_create, _hosted_update, _hosted_get = _typed("hosted")

ROUTES = [
    Route("GET", "/v1/repositories", list_repositories),
    Route("GET", "/v1/repositories/{name}", get_repository),
    Route("DELETE", "/v1/repositories/{name}", delete_repository),
    Route("GET", "/v1/repositorySettings", repository_settings),
    Route("POST", "/v1/repositories/docker/proxy", _proxy_create, consumes="json"),
    Route("GET", "/v1/repositories/docker/proxy/{name}", _proxy_get),
    Route("PUT", "/v1/repositories/docker/proxy/{name}", _proxy_update, consumes="json"),
    Route("POST", "/v1/repositories/docker/group", _group_create, consumes="json"),
    Route("GET", "/v1/repositories/docker/group/{name}", _group_get),
    Route("PUT", "/v1/repositories/docker/group/{name}", _group_update, consumes="json"),
    Route("POST", "/v1/repositories/docker/hosted", _hosted_create, consumes="json"),
    Route("GET", "/v1/repositories/docker/hosted/{name}", _hosted_get),
    Route("PUT", "/v1/repositories/docker/hosted/{name}", _hosted_update, consumes="json"),
]
