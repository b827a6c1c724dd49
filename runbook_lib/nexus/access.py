"""Which repositories the anonymous user reads: Nexus's grants, evaluated as Nexus evaluates them.

Facts (help.sonatype.com/en/privileges.html, help.sonatype.com/en/access-control.html,
help.sonatype.com/repomanager3/nexus-repository-administration/user-authentication/anonymous-access;
sonatype/nexus-public RepositoryViewPrivilegeDescriptor; Apache Shiro WildcardPermission):
- while anonymous access is enabled, unauthenticated requests run as the user the anonymous settings
  name, with that user's roles (nested roles count); while it is off nobody reads anonymously;
- privileges only grant, they never restrict: a role cannot take away what another role gives;
- a repository-view privilege is the permission ``nexus:repository-view:<format>:<repository>:<actions>``,
  a wildcard privilege its pattern; ``*`` matches anything, a shorter permission implies longer ones,
  parts compare case-insensitively; a grant on a group does not reach its members;
- a content-selector privilege grants read of what its selector matches in a repository: counted here
  as read of that repository (partial, but anonymous all the same);
- the built-in nx-anonymous role holds nx-repository-view-*-*-read: every repository, also the ones
  created later; it cannot be edited (replace it on the user instead).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

LATER = "(any repository created later)"  # read-set key for grants that reach repositories not yet made
_LATER_NAME = "\x00later"  # a repository name no server holds, to test open-ended grants


def permission_text(privilege: Mapping[str, Any]) -> str | None:
    """The Shiro permission a privilege grants (repository read only matters here), or None."""
    kind = privilege.get("type")
    actions = ",".join(str(a).lower().replace("all", "*") for a in privilege.get("actions") or [])
    if kind == "wildcard":
        return privilege.get("pattern")
    if kind in ("repository-view", "repository-content-selector"):
        return f"nexus:repository-view:{privilege.get('format')}:{privilege.get('repository')}:{actions}"
    if kind == "repository-admin":
        return f"nexus:repository-admin:{privilege.get('format')}:{privilege.get('repository')}:{actions}"
    if kind == "application":
        return f"nexus:{privilege.get('domain')}:{actions}"
    return None  # script and other types grant no repository view


def _parts(text: str) -> list[frozenset[str]]:
    return [frozenset(s.strip() for s in part.lower().split(",")) for part in text.split(":")]


def implies(granted: str, wanted: str) -> bool:
    mine, other = _parts(granted), _parts(wanted)
    for i, want in enumerate(other):
        if i >= len(mine):
            return True
        if "*" not in mine[i] and not mine[i] >= want:
            return False
    return all("*" in part for part in mine[len(other) :])


@dataclass
class SecurityModel:
    """What the REST API shows of roles, privileges and repositories (read once per plan)."""

    roles: dict[str, dict[str, Any]]
    privileges: dict[str, dict[str, Any]]
    repositories: list[tuple[str, str]]  # (name, format)

    def closure(self, role_id: str) -> list[str]:
        seen: list[str] = []
        pending = [role_id]
        while pending:
            rid = pending.pop()
            if rid in seen or rid not in self.roles:
                continue
            seen.append(rid)
            pending.extend(self.roles[rid].get("roles") or [])
        return seen

    def permissions(self, role_id: str) -> list[str]:
        out = []
        for rid in self.closure(role_id):
            for name in self.roles[rid].get("privileges") or []:
                text = permission_text(self.privileges.get(name) or {})
                if text:
                    out.append(text)
        return out

    def reads(self, role_id: str) -> list[str]:
        """Repositories a role reads (with nested roles); LATER when it reaches repositories not yet made."""
        granted = self.permissions(role_id)
        out = [
            name
            for name, fmt in self.repositories
            if any(implies(g, f"nexus:repository-view:{fmt}:{name}:read") for g in granted)
        ]
        formats = {fmt for _, fmt in self.repositories} | {"docker", "maven2", "\x00format"}
        if any(implies(g, f"nexus:repository-view:{f}:{_LATER_NAME}:read") for g in granted for f in formats):
            out.append(LATER)
        return out

    def with_role(
        self, role: Mapping[str, Any], privileges: Iterable[Mapping[str, Any]] = ()
    ) -> SecurityModel:
        """The model as it will be once `role` is written (and built-in `privileges` exist)."""
        roles = {**self.roles, role["id"]: dict(role)}
        privs = dict(self.privileges)
        for p in privileges:
            privs.setdefault(p["name"], dict(p))
        return SecurityModel(roles, privs, self.repositories)


@dataclass
class ReadSet:
    """Repository -> the anonymous user's direct roles that give read on it."""

    by_repository: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, model: SecurityModel, enabled: bool, user_roles: Iterable[str]) -> ReadSet:
        out: dict[str, list[str]] = {}
        if enabled:
            for rid in user_roles:
                for repo in model.reads(rid):
                    out.setdefault(repo, []).append(rid)
        return cls(out)

    def only(self, names: Iterable[str], keep: bool = True) -> ReadSet:
        wanted = set(names)
        return ReadSet({r: v for r, v in self.by_repository.items() if (r in wanted) == keep})

    def describe(self, repo: str) -> str:
        roles = self.by_repository.get(repo)
        return f"read (role {', '.join(sorted(roles))})" if roles else "no"


def repository_view(fmt: str, repo: str, action: str) -> dict[str, Any]:
    """A built-in privilege Nexus generates per repository: nx-repository-view-<fmt>-<repo>-<action>."""
    return {
        "type": "repository-view",
        "name": f"nx-repository-view-{fmt}-{repo}-{action}",
        "format": fmt,
        "repository": repo,
        "actions": [action.upper()],
    }
