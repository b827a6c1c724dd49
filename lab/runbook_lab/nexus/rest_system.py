"""System resources: status, blob stores, the Community Edition EULA, components and search.

Facts (sonatype/nexus-public StatusResource, BlobStoreResource, ComponentsResource, SearchResource;
contract.json endpoints status.*, blobstores.list, eula.*,
components.list, search.components):
- `/v1/status` and `/v1/status/writable` need no authentication and answer 200 with an empty body;
  `/v1/status/check` needs `nexus:metrics:read` and maps check names to Codahale HealthCheck results.
- `/v1/blobstores` needs `nexus:blobstores:read`.
- `/v1/system/eula` (3.77+) needs `nexus:*`. POST must carry the byte-identical disclaimer (typographic
  quotes ‘ ’) else IllegalArgumentException -> 500; `accepted:false` is refused the same way; accepting
  twice is a no-op (NP CommunityEulaApiResource, EulaStatus.EXPECTED_DISCLAIMER).
- `/v1/components?repository=` pages by 100, `/v1/search` by 50 (NP ComponentsResourceSupport,
  SearchResource). A token is returned whenever a page is full, so the page after a full last page is
  empty with a null token. No `repository` -> 422, unknown repository -> 404, no read/browse -> 403, all
  with empty bodies. A group lists its members' content; search filters by the caller's permissions and
  does not expand groups (search a member proxy by name).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import time
from typing import Any

from runbook_lab.nexus.errors import StatusOnly, Unexpected, ValidationFailed
from runbook_lab.nexus.rest import Call, Response, Route
from runbook_lab.nexus.state import now_iso, password_matches
from runbook_lab.nexus.validation import EULA

EULA_DISCLAIMER = (
    "Use of Sonatype Nexus Repository - Community Edition is governed by the End User License Agreement at "
    "https://links.sonatype.com/products/nxrm/ce-eula. By returning the value from ‘accepted:false’ to "
    "‘accepted:true’, you acknowledge that you have read and agree to the End User License Agreement at "
    "https://links.sonatype.com/products/nxrm/ce-eula."
)
COMPONENTS_PAGE = 100
SEARCH_PAGE = 50


# ------------------------------------------------------------------------------------------ status
def status(call: Call) -> Response:
    return Response(200)


def status_writable(call: Call) -> Response:
    return Response(200)


def status_check(call: Call) -> Response:
    call.require("nexus:metrics:read")
    stamp_ms = int(time.time() * 1000)
    with call.state.read() as data:
        admin_default = data["users"]["admin"]["password"]

    def result(healthy: bool, message: str | None) -> dict[str, Any]:
        return {
            "healthy": healthy,
            "message": message,
            "error": None,
            "details": None,
            "duration": 0,
            "timestamp": now_iso(),
            "time": stamp_ms,
        }

    default_creds = password_matches("admin123", admin_default)
    return Response(
        200,
        {
            "Available CPUs": result(
                True, f"The host system is allocating a maximum of {os.cpu_count()} cores to the application."
            ),
            "Blob Stores": result(True, None),
            "Default Admin Credentials": result(
                not default_creds,
                "The default admin credentials have been changed."
                if not default_creds
                else "The default admin credentials are in use.",
            ),
            "File Blob Stores Path": result(True, "All file blob stores are configured with relative paths."),
            "Lifecycle Phase": result(True, "Lifecycle phase is TASKS"),
            "Read-Only Detector": result(True, "Nexus Repository is not in read-only mode"),
            "Scheduler": result(True, None),
            "Thread Deadlock Detector": result(True, None),
            "Transactions": result(True, "Transaction status"),
        },
    )


# ------------------------------------------------------------------------------------ blob stores
def blobstores(call: Call) -> Response:
    call.require("nexus:blobstores:read")
    free = shutil.disk_usage(call.state.data_dir).free
    out = []
    with call.state.read() as data:
        for name, store in data["blobStores"].items():
            count = size = 0
            for repo, components in data["components"].items():
                doc = data["repositories"].get(repo)
                if doc is None or doc["storage"]["blobStoreName"] != name:
                    continue
                for component in components:
                    count += len(component["assets"])
                    size += sum(int(a.get("fileSize") or 0) for a in component["assets"])
            out.append(
                {
                    "softQuota": None,
                    "name": name,
                    "type": store["type"],
                    "unavailable": False,
                    "blobCount": count,
                    "totalSizeInBytes": size,
                    "availableSpaceInBytes": free,
                }
            )
    return Response(200, out)


# ------------------------------------------------------------------------------------------- EULA
def _eula_available(call: Call) -> None:
    if not call.release.at_least("3.77"):
        raise StatusOnly(404)  # no such resource before 3.77


def eula_get(call: Call) -> Response:
    _eula_available(call)
    call.require("nexus:*")
    with call.state.read() as data:
        accepted = bool(data["eulaAccepted"])
    return Response(200, {"accepted": accepted, "disclaimer": EULA_DISCLAIMER})


def eula_post(call: Call) -> Response:
    _eula_available(call)
    body = call.bind(EULA)
    call.require("nexus:*")
    if body["disclaimer"] != EULA_DISCLAIMER:
        raise Unexpected("java.lang.IllegalArgumentException", "Invalid EULA disclaimer")
    if not body["accepted"]:
        raise Unexpected("java.lang.IllegalArgumentException", "EULA must be accepted")
    with call.state.edit() as data:
        data["eulaAccepted"] = True
    return Response(204)


# ------------------------------------------------------------------------------ components, search
def _asset_xo(call: Call, repo: str, fmt: str, blob_store: str, asset: dict[str, Any]) -> dict[str, Any]:
    return {
        "downloadUrl": f"{call.base_url}/repository/{repo}/{asset['path'].lstrip('/')}",
        "path": asset["path"],
        "id": asset["id"],
        "repository": repo,
        "format": fmt,
        "checksum": asset.get("checksum") or {},
        "contentType": asset.get("contentType") or "application/octet-stream",
        "lastModified": asset.get("lastModified"),
        "lastDownloaded": asset.get("lastDownloaded"),
        "uploader": asset.get("uploader"),
        "uploaderIp": asset.get("uploaderIp"),
        "fileSize": int(asset.get("fileSize") or 0),
        "blobCreated": asset.get("blobCreated"),
        "blobStoreName": blob_store,
    }


def _component_xo(call: Call, data: dict[str, Any], repo: str, component: dict[str, Any]) -> dict[str, Any]:
    doc = data["repositories"][repo]
    assets = [
        _asset_xo(call, repo, doc["format"], doc["storage"]["blobStoreName"], a) for a in component["assets"]
    ]
    return {
        "id": component["id"],
        "repository": repo,
        "format": doc["format"],
        "group": None,
        "name": component["name"],
        "version": component["version"],
        "assets": assets,
    }


def _content_of(data: dict[str, Any], repo: str, seen: set[str] | None = None) -> list[tuple[str, dict]]:
    """A repository's components; a group's are its members' in member order (nested groups once)."""
    seen = set() if seen is None else seen
    if repo in seen or repo not in data["repositories"]:
        return []
    seen.add(repo)
    doc = data["repositories"][repo]
    if doc["type"] == "group":
        out: list[tuple[str, dict]] = []
        for member in doc["group"]["memberNames"]:
            out.extend(_content_of(data, member, seen))
        return out
    return [(repo, c) for c in data["components"].get(repo, [])]


def _token(key: str, offset: int) -> str:
    return f"{offset:08x}" + hashlib.sha1(f"{key}\0{offset}".encode()).hexdigest()[:24]


def _offset(key: str, token: str | None) -> int:
    if not token:
        return 0
    try:
        offset = int(token[:8], 16)
    except ValueError:
        offset = -1
    if offset < 0 or _token(key, offset) != token:
        raise StatusOnly(400)  # [approximation] the real error for a foreign token was not established
    return offset


def _page(items: list[Any], key: str, token: str | None, size: int) -> tuple[list[Any], str | None]:
    start = _offset(key, token)
    page = items[start : start + size]
    return page, (_token(key, start + size) if len(page) == size else None)


def components(call: Call) -> Response:
    repo = call.q("repository")
    if not repo:
        raise StatusOnly(422)
    with call.state.read() as data:
        if repo not in data["repositories"]:
            raise StatusOnly(404)
        if not (call.state.can(call.user, repo, "read") or call.state.can(call.user, repo, "browse")):
            raise StatusOnly(403)
        content = _content_of(data, repo)
        page, token = _page(content, f"components:{repo}", call.q("continuationToken"), COMPONENTS_PAGE)
        items = [_component_xo(call, data, r, c) for r, c in page]
    return Response(200, {"items": items, "continuationToken": token})


def _matches(pattern: str | None, value: str | None) -> bool:
    if pattern is None or pattern == "":
        return True
    if value is None:
        return False
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


def search(call: Call) -> Response:
    name = call.q("name") or call.q("docker.imageName")
    version = call.q("version") or call.q("docker.imageTag")
    for value in (name, version, call.q("group"), call.q("q")):
        if value and value.startswith("*"):
            raise ValidationFailed([("*", "Leading wildcards are prohibited")])
    fmt, repo_filter, keyword = (
        call.q("format"),
        call.q("repository") or call.q("repositoryName"),
        call.q("q"),
    )
    with call.state.read() as data:
        found: list[tuple[str, dict]] = []
        for repo, doc in data["repositories"].items():
            if (
                doc["type"] == "group"
                or (repo_filter and repo != repo_filter)
                or (fmt and doc["format"] != fmt)
            ):
                continue
            if not (call.state.can(call.user, repo, "browse") or call.state.can(call.user, repo, "read")):
                continue
            for component in data["components"].get(repo, []):
                if not (_matches(name, component["name"]) and _matches(version, component["version"])):
                    continue
                if call.q("group"):
                    continue  # docker components have no group (ComponentXO.group is null)
                if keyword and keyword.lower().rstrip("*") not in component["name"].lower():
                    continue
                found.append((repo, component))
        sort = call.q("sort")
        if sort in ("name", "version", "repository", "group"):
            field = {"repository": 0}.get(sort)
            found.sort(
                key=lambda rc: rc[0] if field == 0 else (rc[1].get(sort) or ""),
                reverse=(call.q("direction") or "asc").lower() == "desc",
            )
        key = "search:" + "&".join(
            f"{k}={v}" for k, v in sorted(call.handler.query.items()) if k != "continuationToken"
        )
        page, token = _page(found, key, call.q("continuationToken"), SEARCH_PAGE)
        items = [_component_xo(call, data, r, c) for r, c in page]
    return Response(200, {"items": items, "continuationToken": token})


ROUTES = [
    Route("GET", "/v1/status", status),
    Route("GET", "/v1/status/writable", status_writable),
    Route("GET", "/v1/status/check", status_check),
    Route("GET", "/v1/blobstores", blobstores),
    Route("GET", "/v1/system/eula", eula_get),
    Route("POST", "/v1/system/eula", eula_post, consumes="json"),
    Route("GET", "/v1/components", components),
    Route("GET", "/v1/search", search),
]
