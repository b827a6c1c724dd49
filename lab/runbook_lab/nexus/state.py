"""Everything the emulated Nexus knows, persisted as one JSON file in its data directory.

The REST half (rest*.py) and the docker connectors (connector.py) share one `NexusState`. Writes happen
under a lock and land atomically (temp file + rename), so a restart keeps the configuration.

First start follows NP components/nexus-security/.../config/StaticSecurityConfigurationSource.java and
internal/AdminPasswordFileManagerImpl.java:
- admin password: env `NEXUS_SECURITY_INITIAL_PASSWORD` (3.76+) if not blank; else the content of
  `<data-dir>/admin.password`; else, unless env `NEXUS_SECURITY_RANDOMPASSWORD` is not "true"
  (Boolean.valueOf), a random UUID written to that file; else `admin123`;
- with a random password (3.76+) admin's status is `changepassword`, which still authenticates;
- users `admin` (role nx-admin) and `anonymous` (role nx-anonymous, password "anonymous" as in the static
  source); roles nx-admin -> nx-all and nx-anonymous -> search/healthcheck read and
  nx-repository-view-*-*-browse/-read; active realms `["NexusAuthenticatingRealm"]` from 3.60 (before:
  plus NexusAuthorizingRealm, NP InitialRealmConfigurationProvider); anonymous access enabled; a File blob
  store `default` (NP BlobStoreManagerImpl).
Passwords are stored as salted PBKDF2-SHA512 hashes (Nexus stores shiro1 SHA-512 hashes), never in clear;
upstream credentials in repository documents are kept as sent, because the proxy must use them.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runbook_lab.nexus.edition import Release, check_edition, default_edition
from runbook_lab.nexus.permissions import (
    WildcardPermission,
    builtin_privileges,
    implied,
    permission_of,
)

STATE_FILE = "nexus-state.json"
ADMIN_PASSWORD_FILE = "admin.password"
SCHEMA = 1

AUTHENTICATING_REALM = "NexusAuthenticatingRealm"
AUTHORIZING_REALM = "NexusAuthorizingRealm"
ACTIVE_STATUSES = ("active", "changepassword")  # CUser.isActive

# Shipped by the static security source; not editable (help.sonatype.com anonymous-access page: "It is not
# possible to adjust the default anonymous role"; contract.json roles.update/delete: 400 for read-only roles).
BUILTIN_ROLES = ("nx-admin", "nx-anonymous")

ANONYMOUS_ROLE_PRIVILEGES = [
    "nx-healthcheck-read",
    "nx-search-read",
    "nx-repository-view-*-*-read",
    "nx-repository-view-*-*-browse",
]


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 1024)
    return "pbkdf2-sha512$1024$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def password_matches(password: str, stored: str) -> bool:
    try:
        _, rounds, salt, digest = stored.split("$")
        got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(rounds))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}+00:00"


class NexusState:
    """Configuration and content metadata of one emulated Nexus; thread-safe."""

    def __init__(
        self,
        data_dir: Path | str,
        version: str = "3.94.0-01",
        edition: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.release = Release.parse(version)
        self.version: str = self.release.text
        self.edition: str = check_edition(edition) if edition else default_edition(self.release)
        self._lock = threading.RLock()
        self._notify_lock = threading.Lock()
        self._subscribers: list[Callable[[], None]] = []
        self._builtin_cache: tuple[tuple[tuple[str, str], ...], dict[str, dict[str, Any]]] | None = None
        self._path = self.data_dir / STATE_FILE
        loaded = self._load()
        if loaded is None:
            self._data = self._first_start(os.environ if environ is None else environ)
            self._save()
        else:
            self._data = loaded

    # -- persistence -----------------------------------------------------------------------------
    def _load(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self._path.read_text())
        except FileNotFoundError:
            return None
        if data.get("schema") != SCHEMA:
            raise RuntimeError(f"{self._path}: unknown state schema {data.get('schema')!r}")
        return data

    def _save(self) -> None:
        tmp = self._path.with_name(f".{STATE_FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(self._data, ensure_ascii=False))  # one line: the C encoder, fast
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)

    def _first_start(self, environ: Mapping[str, str]) -> dict[str, Any]:
        password, status = self._initial_admin_password(environ)
        realms = (
            [AUTHENTICATING_REALM]
            if self.release.at_least("3.60")
            else [AUTHENTICATING_REALM, AUTHORIZING_REALM]
        )
        return {
            "schema": SCHEMA,
            "users": {
                "admin": {
                    "userId": "admin",
                    "firstName": "Administrator",
                    "lastName": "User",
                    "emailAddress": "admin@example.org",
                    "status": status,
                    "roles": ["nx-admin"],
                    "password": hash_password(password),
                },
                "anonymous": {
                    "userId": "anonymous",
                    "firstName": "Anonymous",
                    "lastName": "User",
                    "emailAddress": "anonymous@example.org",
                    "status": "active",
                    "roles": ["nx-anonymous"],
                    "password": hash_password("anonymous"),
                },
            },
            "roles": {
                "nx-admin": {
                    "id": "nx-admin",
                    "name": "nx-admin",
                    "description": "Administrator Role",
                    "privileges": ["nx-all"],
                    "roles": [],
                },
                "nx-anonymous": {
                    "id": "nx-anonymous",
                    "name": "nx-anonymous",
                    "description": "Anonymous Role",
                    "privileges": list(ANONYMOUS_ROLE_PRIVILEGES),
                    "roles": [],
                },
            },
            "privileges": {},
            "realms": realms,
            "anonymous": {"enabled": True, "userId": "anonymous", "realmName": AUTHORIZING_REALM},
            "repositories": {},
            "blobStores": {"default": {"name": "default", "type": "File", "path": "default"}},
            "components": {},
            "eulaAccepted": False,
        }

    def _initial_admin_password(self, environ: Mapping[str, str]) -> tuple[str, str]:
        if self.release.at_least("3.76"):
            given = environ.get("NEXUS_SECURITY_INITIAL_PASSWORD", "")
            if given.strip():
                return given, "active"
        random_enabled = environ.get("NEXUS_SECURITY_RANDOMPASSWORD", "true").strip().lower() == "true"
        random_status = "changepassword" if random_enabled and self.release.at_least("3.76") else "active"
        saved = self.admin_password_file
        if saved.is_file() and saved.read_text().strip():
            return saved.read_text().strip(), random_status
        if not random_enabled:
            return "admin123", "active"
        password = str(uuid.uuid4())
        saved.write_text(password)
        return password, random_status

    @property
    def admin_password_file(self) -> Path:
        return self.data_dir / ADMIN_PASSWORD_FILE

    # -- access for the REST resources ------------------------------------------------------------
    @contextmanager
    def read(self) -> Iterator[dict[str, Any]]:
        """The live document under the lock; callers must not change it."""
        with self._lock:
            yield self._data

    @contextmanager
    def edit(self, repositories_changed: bool = False) -> Iterator[dict[str, Any]]:
        """Change the document under the lock; saved on success, rolled back on an exception."""
        with self._lock:
            backup = json.dumps(self._data)
            try:
                yield self._data
            except BaseException:
                self._data = json.loads(backup)
                raise
            if repositories_changed:
                self._builtin_cache = None
            self._save()
        if repositories_changed:
            self._notify()

    def subscribe(self, callback: Callable[[], None]) -> None:
        """`callback()` runs after any repository change (outside the state lock, one at a time)."""
        with self._lock:
            self._subscribers.append(callback)

    def _notify(self) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        with self._notify_lock:
            for callback in subscribers:
                callback()

    # -- security ---------------------------------------------------------------------------------
    def privileges(self) -> dict[str, dict[str, Any]]:
        """Built-in plus user-defined privileges by name (call under the lock or accept a snapshot)."""
        with self._lock:
            repos = tuple(sorted((n, r["format"]) for n, r in self._data["repositories"].items()))
            if self._builtin_cache is None or self._builtin_cache[0] != repos:
                self._builtin_cache = (repos, builtin_privileges(repos))
            merged = dict(self._builtin_cache[1])
            merged.update(self._data["privileges"])
            return merged

    def _role_closure(self, role_ids: list[str]) -> list[dict[str, Any]]:
        roles = self._data["roles"]
        seen: set[str] = set()
        out: list[dict[str, Any]] = []
        pending = list(role_ids)
        while pending:
            rid = pending.pop()
            if rid in seen or rid not in roles:
                continue
            seen.add(rid)
            out.append(roles[rid])
            pending.extend(roles[rid].get("roles") or [])
        return out

    def permissions(self, user_id: str | None) -> list[WildcardPermission]:
        with self._lock:
            user = self._data["users"].get(user_id) if user_id is not None else None
            if user is None:
                return []
            privileges = self.privileges()
            granted: list[WildcardPermission] = []
            for role in self._role_closure(user.get("roles") or []):
                for name in role.get("privileges") or []:
                    text = permission_of(privileges[name]) if name in privileges else None
                    if text:
                        granted.append(WildcardPermission(text))
            return granted

    def permitted(self, user_id: str | None, permission: str) -> bool:
        return implied(self.permissions(user_id), permission)

    def anonymous_principal(self) -> str | None:
        """The user id anonymous requests run as, or None when anonymous access is off."""
        with self._lock:
            settings = self._data["anonymous"]
            return settings["userId"] if settings["enabled"] else None

    def set_password(self, user_id: str, password: str) -> None:
        with self.edit() as data:
            data["users"][user_id]["password"] = hash_password(password)

    # -- the connector half's view (keep these signatures stable) --------------------------------
    def docker_repos(self) -> list[dict]:
        """Full stored documents (proxy and group) of docker repositories, secrets included."""
        with self._lock:
            return [
                copy.deepcopy(r) for r in self._data["repositories"].values() if r.get("format") == "docker"
            ]

    def repo_config(self, name: str) -> dict | None:
        """The stored document (API request shape plus format/type), incl. upstream credentials."""
        with self._lock:
            doc = self._data["repositories"].get(name)
            return copy.deepcopy(doc) if doc is not None else None

    def authenticate(self, user: str, password: str) -> bool:
        """Local realm active, user active or changepassword, password matches."""
        with self._lock:
            if AUTHENTICATING_REALM not in self._data["realms"]:
                return False
            record = self._data["users"].get(user)
            if record is None or record["status"] not in ACTIVE_STATUSES:
                return False
            stored = record["password"]
        return password_matches(password, stored)

    def anonymous_enabled(self) -> bool:
        with self._lock:
            return bool(self._data["anonymous"]["enabled"])

    def realm_active(self, realm_id: str) -> bool:
        with self._lock:
            if realm_id == AUTHORIZING_REALM and self.release.at_least("3.60"):
                return True  # always installed last since 3.60 (NP RealmManagerImpl)
            return realm_id in self._data["realms"]

    def can(self, user_id: str | None, repo: str, action: str) -> bool:
        """Repository-view permission `action` ('read'|'browse'|...) on `repo`; None = the anonymous user.

        Granting a group does not grant its members (NP RepositoryViewPermission is per repository)."""
        with self._lock:
            doc = self._data["repositories"].get(repo)
            if doc is None:
                return False
            principal = user_id if user_id is not None else self.anonymous_principal()
            if principal is None:
                return False
            return self.permitted(principal, f"nexus:repository-view:{doc['format']}:{repo}:{action}")

    def eula_blocks_access(self) -> bool:
        """Community Edition 3.77+ blocks repository access until the EULA is accepted (AzureTRE#4842)."""
        with self._lock:
            return (
                self.edition == "COMMUNITY"
                and self.release.at_least("3.77")
                and not self._data["eulaAccepted"]
            )

    def record_component(self, repo: str, name: str, version: str, assets: list[dict]) -> None:
        """Remember a component (docker: image name + tag) so the components/search APIs show it.

        Idempotent: the same (repo, name, version) updates its assets in place, merged by `path`."""
        with self.edit() as data:
            if repo not in data["repositories"]:
                return
            components = data["components"].setdefault(repo, [])
            found = next((c for c in components if c["name"] == name and c["version"] == version), None)
            if found is None:
                found = {
                    "id": _opaque_id(repo, f"{name}:{version}"),
                    "name": name,
                    "version": version,
                    "assets": [],
                }
                components.append(found)
            by_path = {a["path"]: a for a in found["assets"]}
            for asset in assets:
                entry = dict(asset)
                entry.setdefault("id", _opaque_id(repo, entry["path"]))
                entry.setdefault("lastModified", now_iso())
                entry.setdefault("blobCreated", entry["lastModified"])
                by_path[entry["path"]] = {**by_path.get(entry["path"], {}), **entry}
            found["assets"] = list(by_path.values())


def _opaque_id(repo: str, key: str) -> str:
    """An id in the style of Nexus's (base64 of repository + internal id), stable for the same input."""
    digest = hashlib.sha1(f"{repo}\0{key}".encode()).hexdigest()[:32]
    return base64.urlsafe_b64encode(f"{repo}:{digest}".encode()).decode().rstrip("=")
