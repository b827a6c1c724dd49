"""Nexus's authorization model: Shiro wildcard permissions granted by privileges, privileges by roles.

- A permission is `part:part:...`, each part a comma-separated set, `*` matching anything; a granted
  permission with fewer parts implies every longer one (Apache Shiro WildcardPermission, which Nexus uses;
  case-insensitive).
- Privilege types map to permissions (NP components/nexus-security/.../privilege/*Descriptor.java,
  components/nexus-repository-services/.../security/Repository{View,Admin}PrivilegeDescriptor.java):
  wildcard -> its pattern; application -> `nexus:<domain>:<actions>`; repository-view ->
  `nexus:repository-view:<format>:<repository>:<actions>`; repository-admin likewise.
- Repository actions are stored lower-case (`browse`, `read`, `edit`, `add`, `delete`, `*`); the REST API
  shows them as PrivilegeAction enum names (ALL for `*`).
- Built-in, read-only privileges exist for every repository: `nx-repository-view-<format>-<repo>-<action>`
  (e.g. nx-repository-view-docker-docker-group-read, NP RepositoryViewPrivilegeDescriptor.id()), the same
  for `*` formats/repositories, and `nx-repository-admin-...` counterparts; `nx-all` is `nexus:*`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

REPO_ACTIONS = ("browse", "read", "edit", "add", "delete", "*")

# PrivilegeAction enum (NP privilege/rest/PrivilegeAction.java) <-> stored action
ENUM_TO_ACTION = {
    "BROWSE": "browse",
    "READ": "read",
    "EDIT": "edit",
    "ADD": "add",
    "DELETE": "delete",
    "ALL": "*",
    "RUN": "run",
    "START": "start",
    "STOP": "stop",
    "ASSOCIATE": "associate",
    "DISASSOCIATE": "disassociate",
}
ACTION_TO_ENUM = {v: k for k, v in ENUM_TO_ACTION.items()}
REPOSITORY_VIEW_ENUMS = ("BROWSE", "READ", "EDIT", "ADD", "DELETE", "ALL")

# Format ids of the stock recipes a repository-view privilege may name (besides `*`).
KNOWN_FORMATS = (
    "apt",
    "bower",
    "cargo",
    "cocoapods",
    "composer",
    "conan",
    "conda",
    "docker",
    "gitlfs",
    "go",
    "helm",
    "huggingface",
    "maven2",
    "npm",
    "nuget",
    "p2",
    "pypi",
    "r",
    "raw",
    "rubygems",
    "swift",
    "terraform",
    "yum",
)


class WildcardPermission:
    def __init__(self, text: str) -> None:
        self.text = text
        self.parts = [frozenset(s.strip() for s in part.lower().split(",")) for part in text.split(":")]

    def implies(self, other: WildcardPermission) -> bool:
        for i, wanted in enumerate(other.parts):
            if i >= len(self.parts):
                return True
            mine = self.parts[i]
            if "*" not in mine and not mine >= wanted:
                return False
        return all("*" in mine for mine in self.parts[len(other.parts) :])

    def __repr__(self) -> str:
        return f"WildcardPermission({self.text!r})"


def permission_of(privilege: dict[str, Any]) -> str | None:
    kind = privilege.get("type")
    if kind == "wildcard":
        return privilege["pattern"]
    actions = ",".join(privilege.get("actions") or [])
    if kind == "application":
        return f"nexus:{privilege['domain']}:{actions}"
    if kind in ("repository-view", "repository-admin"):
        return f"nexus:{kind}:{privilege['format']}:{privilege['repository']}:{actions}"
    return None


def implied(granted: Iterable[WildcardPermission], wanted: str) -> bool:
    target = WildcardPermission(wanted)
    return any(p.implies(target) for p in granted)


def _application(name: str, domain: str, actions: list[str], description: str) -> dict[str, Any]:
    return {
        "type": "application",
        "name": name,
        "description": description,
        "readOnly": True,
        "domain": domain,
        "actions": actions,
    }


def _repository(kind: str, fmt: str, repo: str, action: str) -> dict[str, Any]:
    short = "view" if kind == "repository-view" else "admin"
    what = "All" if action == "*" else action.capitalize()
    fmt_text = "all" if fmt == "*" else fmt
    repo_text = "all" if repo == "*" else repo
    noun = "repository" if short == "view" else "repository administration"
    return {
        "type": kind,
        "name": f"nx-repository-{short}-{fmt}-{repo}-{action}",
        "description": f"{what} permissions for {fmt_text} '{repo_text}' {noun}"
        if repo != "*"
        else f"{what} permissions for all {fmt_text} {noun}s",
        "readOnly": True,
        "format": fmt,
        "repository": repo,
        "actions": [action],
    }


def builtin_privileges(repositories: Iterable[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """Read-only privileges Nexus ships, plus the ones generated for each (name, format) repository."""
    out: dict[str, dict[str, Any]] = {}

    def add(p: dict[str, Any]) -> None:
        out[p["name"]] = p

    add(
        {
            "type": "wildcard",
            "name": "nx-all",
            "description": "All permissions",
            "readOnly": True,
            "pattern": "nexus:*",
        }
    )
    add(_application("nx-blobstores-read", "blobstores", ["read"], "Read permission for Blobstores"))
    add(_application("nx-healthcheck-read", "healthcheck", ["read"], "Read permission for Healthcheck"))
    add(_application("nx-metrics-all", "metrics", ["*"], "All permissions for Metrics"))
    add(_application("nx-privileges-read", "privileges", ["read"], "Read permission for Privileges"))
    add(_application("nx-roles-read", "roles", ["read"], "Read permission for Roles"))
    add(_application("nx-search-read", "search", ["read"], "Read permission for Search"))
    add(_application("nx-settings-read", "settings", ["read"], "Read permission for Settings"))
    add(_application("nx-users-read", "users", ["read"], "Read permission for Users"))
    scopes = {("*", "*"), ("docker", "*")}
    scopes.update((fmt, name) for name, fmt in repositories)
    for fmt, repo in sorted(scopes):
        for action in REPO_ACTIONS:
            add(_repository("repository-view", fmt, repo, action))
            add(_repository("repository-admin", fmt, repo, action))
    return out


def render_privilege(p: dict[str, Any]) -> dict[str, Any]:
    """The REST view of a privilege (ApiPrivilege* XOs): repository actions as enum names."""
    out: dict[str, Any] = {
        "type": p["type"],
        "name": p["name"],
        "description": p.get("description") or "",
        "readOnly": bool(p.get("readOnly")),
    }
    if p["type"] == "wildcard":
        out["pattern"] = p["pattern"]
    elif p["type"] == "application":
        out["domain"] = p["domain"]
        out["actions"] = [ACTION_TO_ENUM.get(a, a.upper()) if a != "*" else "ALL" for a in p["actions"]]
    else:
        out["actions"] = [ACTION_TO_ENUM.get(a, a.upper()) for a in p["actions"]]
        out["format"] = p["format"]
        out["repository"] = p["repository"]
    return out
