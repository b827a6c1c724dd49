"""Security resources: realms, anonymous access, privileges, roles, users.

Facts (contract.json realms.*, anonymous.*, privileges.*, roles.*, users.*;
NP components/nexus-security/.../realm/api/RealmApiResource.java,
anonymous/rest/AnonymousAccessApiResource.java,
privilege/rest/PrivilegeApiResourceSupport.java, role/rest/RoleApiResource.java,
internal/rest/UserApiResource.java;
components/nexus-repository-services/.../RepositoryPrivilegeDescriptorSupport):
- realms: GET lists sorted by name; PUT replaces the ordered list (204) and rejects ids that are not
  available with 400 "Unknown realmIds: [..]" thrown as text/plain; NexusAuthorizingRealm is hidden and
  therefore unknown from 3.60.
- anonymous: PUT answers 200 with the stored settings; absent fields take the XO defaults (enabled=false,
  userId=anonymous, realmName=NexusAuthorizingRealm); realmName must name an installed realm.
- privileges: repository-view create 201, update 204, delete 204; read-only (built-in) ones are refused.
- roles: create 200 with the RoleXOResponse (not 201), update 204; sorted by id.
- users: create 200 with the ApiUser; a duplicate userId escapes as DuplicateUserException -> 500
  text/plain (nexus-public#1047); `userId` search is a case-insensitive prefix match
  (AbstractUserManager.matchesCriteria); change-password takes text/plain, needs nexus:*, and for admin
  deletes admin.password (AdminPasswordFileManager).
"""

from __future__ import annotations

from typing import Any

from runbook_lab.nexus.errors import MessageError, Unexpected, ValidationFailed
from runbook_lab.nexus.permissions import (
    ENUM_TO_ACTION,
    KNOWN_FORMATS,
    REPOSITORY_VIEW_ENUMS,
    render_privilege,
)
from runbook_lab.nexus.rest import Call, Response, Route
from runbook_lab.nexus.rest_repos import find
from runbook_lab.nexus.state import AUTHORIZING_REALM, BUILTIN_ROLES, hash_password
from runbook_lab.nexus.validation import (
    ANONYMOUS,
    CREATE_USER,
    REALM_IDS,
    REPOSITORY_VIEW_PRIVILEGE,
    ROLE,
    USER,
    Violations,
    bind_body,
    unique,
)

REALMS = {  # id -> name (NP realm implementations; contract.json realmIds)
    "NexusAuthenticatingRealm": "Local Authenticating Realm",
    AUTHORIZING_REALM: "Local Authorizing Realm",
    "DockerToken": "Docker Bearer Token Realm",
    "NpmToken": "npm Bearer Token Realm",
    "NuGetApiKey": "NuGet API-Key Realm",
    "ConanToken": "Conan Bearer Token Realm",
    "LdapRealm": "LDAP Realm",
    "DefaultRole": "Default Role Realm",
    "rutauth-realm": "Rut Auth Realm",
}
SOURCE = "default"


# ------------------------------------------------------------------------------------------ realms
def _available(call: Call) -> dict[str, str]:
    hidden = {AUTHORIZING_REALM} if call.release.at_least("3.60") else set()
    return {k: v for k, v in REALMS.items() if k not in hidden}


def realms_available(call: Call) -> Response:
    call.require("nexus:settings:read")
    items = sorted(_available(call).items(), key=lambda kv: kv[1].lower())
    return Response(200, [{"id": k, "name": v} for k, v in items])


def realms_active(call: Call) -> Response:
    call.require("nexus:settings:read")
    available = _available(call)
    with call.state.read() as data:
        return Response(200, [r for r in data["realms"] if r in available])


def realms_set_active(call: Call) -> Response:
    ids = call.bind(REALM_IDS)
    call.require("nexus:settings:update")
    available = _available(call)
    unknown = [r for r in ids if r not in available]
    if unknown:
        raise MessageError(
            400, f"Unknown realmIds: [{', '.join(str(u) for u in unknown)}]", content_type="text/plain"
        )
    with call.state.edit() as data:
        data["realms"] = unique(ids)  # applied at once (RealmManagerImpl.installRealms)
    return Response(204)


# --------------------------------------------------------------------------------------- anonymous
def anonymous_get(call: Call) -> Response:
    call.require("nexus:settings:read", authenticated=False)
    with call.state.read() as data:
        return Response(200, dict(data["anonymous"]))


def anonymous_put(call: Call) -> Response:
    raw = call.json()
    if raw is None:
        raise ValidationFailed([("PARAMETER arg0", "must not be null")])
    bean = bind_body(raw, ANONYMOUS)
    call.require("nexus:settings:update")
    defaults = {"enabled": False, "userId": "anonymous", "realmName": AUTHORIZING_REALM}
    settings = {k: (bean[k] if k in raw else default) for k, default in defaults.items()}
    settings["enabled"] = bool(settings["enabled"])  # a primitive boolean: null -> false
    v = Violations()
    v.not_blank(settings, "userId")
    v.not_blank(settings, "realmName")
    v.raise_if_any()
    with call.state.read() as data:
        installed = set(data["realms"])
    if call.release.at_least("3.60"):
        installed.add(AUTHORIZING_REALM)  # always installed last since 3.60 (RealmManagerImpl)
    if settings["realmName"] not in installed:
        raise ValidationFailed([("realmName", "Realm does not exist")])
    with call.state.edit() as data:
        data["anonymous"] = settings
    return Response(200, dict(settings))


# -------------------------------------------------------------------------------------- privileges
def privileges_list(call: Call) -> Response:
    call.require("nexus:privileges:read")
    privileges = call.state.privileges()
    return Response(200, [render_privilege(privileges[n]) for n in sorted(privileges)])


def privilege_get(call: Call) -> Response:
    call.require("nexus:privileges:read")
    name = call.params["name"]
    found = call.state.privileges().get(name)
    if found is None:
        raise MessageError(404, f"Privilege '{name}' not found.")
    return Response(200, render_privilege(found))


def privilege_delete(call: Call) -> Response:
    call.require("nexus:privileges:delete")
    name = call.params["name"]
    found = call.state.privileges().get(name)
    if found is None:
        raise MessageError(404, f"Privilege '{name}' not found.")
    if found.get("readOnly"):
        raise MessageError(400, f"Privilege '{name}' is internal and cannot be modified or deleted.")
    with call.state.edit() as data:
        del data["privileges"][name]
        for role in data["roles"].values():  # the security cleanup drops dangling references
            role["privileges"] = [p for p in role["privileges"] if p != name]
    return Response(204)


def _repository_view(call: Call, bean: dict[str, Any]) -> dict[str, Any]:
    v = Violations()
    v.name(bean)
    v.not_empty(bean, "actions")
    v.not_blank(bean, "format")
    v.not_blank(bean, "repository")
    v.raise_if_any()
    wrong = [a for a in bean["actions"] if a is None or a not in REPOSITORY_VIEW_ENUMS]
    if wrong:
        raise MessageError(
            400,
            "Privilege of type 'repository-view' cannot use action(s) of type "
            f"'{', '.join(str(w) for w in wrong)}'.",
        )
    fmt, repo = bean["format"], bean["repository"]
    with call.state.read() as data:
        if repo != "*":
            doc = find(data, repo)
            if doc is None:
                raise MessageError(400, f"Invalid repository '{repo}' supplied.")
            if fmt != "*" and fmt != doc["format"]:
                raise MessageError(400, f"Invalid format '{fmt}' supplied for repository '{repo}'.")
        elif fmt != "*" and fmt not in KNOWN_FORMATS:
            raise MessageError(400, f"Invalid format '{fmt}' supplied.")
    return {
        "type": "repository-view",
        "name": bean["name"],
        "description": bean.get("description") or "",
        "readOnly": False,
        "format": fmt,
        "repository": repo,
        "actions": unique([ENUM_TO_ACTION[a] for a in bean["actions"]]),
    }


def privilege_create(call: Call) -> Response:
    bean = call.bind(REPOSITORY_VIEW_PRIVILEGE)
    call.require("nexus:privileges:create")
    name = bean.get("name")
    if name and name in call.state.privileges():
        raise MessageError(400, f"Privilege '{name}' already exists, use a unique name.")
    privilege = _repository_view(call, bean)
    with call.state.edit() as data:
        data["privileges"][privilege["name"]] = privilege
    return Response(201)


def privilege_update(call: Call) -> Response:
    bean = call.bind(REPOSITORY_VIEW_PRIVILEGE)
    call.require("nexus:privileges:update")
    path_name = call.params["name"]
    if bean.get("name") != path_name:
        raise MessageError(
            409,
            f"The privilege name '{bean.get('name')}' does not match the name used in the "
            f"path '{path_name}'.",
        )
    found = call.state.privileges().get(path_name)
    if found is None:
        raise MessageError(404, f"Privilege '{path_name}' not found.")
    if found.get("readOnly"):
        raise MessageError(400, f"Privilege '{path_name}' is internal and cannot be modified or deleted.")
    privilege = _repository_view(call, bean)
    with call.state.edit() as data:
        data["privileges"][path_name] = privilege
    return Response(204)


# ------------------------------------------------------------------------------------------- roles
def _role_xo(role: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": role["id"],
        "source": SOURCE,
        "name": role.get("name") or role["id"],
        "description": role.get("description") if role.get("description") is not None else role["id"],
        "readOnly": role["id"] in BUILTIN_ROLES,
        "privileges": list(role.get("privileges") or []),
        "roles": list(role.get("roles") or []),
    }


def _check_source(call: Call) -> None:
    source = call.q("source")
    if source not in (None, "", SOURCE):
        raise MessageError(400, f"Source '{source}' not found.")


def _role_from(call: Call, bean: dict[str, Any]) -> dict[str, Any]:
    v = Violations()
    v.not_empty(bean, "id")
    v.not_empty(bean, "name")
    v.raise_if_any()
    role = {
        "id": bean["id"],
        "name": bean["name"],
        "description": bean.get("description"),
        "privileges": unique(bean.get("privileges")),
        "roles": unique(bean.get("roles")),
    }
    privileges = call.state.privileges()
    with call.state.read() as data:
        for p in role["privileges"]:
            if p not in privileges:
                raise MessageError(400, f"Privilege '{p}' contained in role '{role['id']}' not found.")
        for r in role["roles"]:
            if r not in data["roles"] and r != role["id"]:
                raise MessageError(400, f"Role '{r}' contained in role '{role['id']}' not found.")
    return role


def _refuse_read_only(rid: str) -> None:
    if rid in BUILTIN_ROLES:
        # the status is the contract's; the wording is [inferred]
        raise MessageError(400, f"Role '{rid}' is read only and cannot be modified or deleted.")


def _contains(data: dict[str, Any], start: list[str], target: str) -> bool:
    seen: set[str] = set()
    pending = list(start)
    while pending:
        rid = pending.pop()
        if rid == target:
            return True
        if rid in seen or rid not in data["roles"]:
            continue
        seen.add(rid)
        pending.extend(data["roles"][rid].get("roles") or [])
    return False


def roles_list(call: Call) -> Response:
    call.require("nexus:roles:read")
    _check_source(call)
    with call.state.read() as data:
        return Response(200, [_role_xo(data["roles"][r]) for r in sorted(data["roles"])])


def role_get(call: Call) -> Response:
    call.require("nexus:roles:read")
    _check_source(call)
    rid = call.params["id"]
    with call.state.read() as data:
        role = data["roles"].get(rid)
        if role is None:
            raise MessageError(404, f"Role '{rid}' not found.")
        return Response(200, _role_xo(role))


def role_create(call: Call) -> Response:
    bean = call.bind(ROLE)
    call.require("nexus:roles:create")
    with call.state.read() as data:
        if bean.get("id") and bean["id"] in data["roles"]:
            raise MessageError(400, f"Role '{bean['id']}' already exists, use a unique roleId.")
    role = _role_from(call, bean)
    if role["id"] in role["roles"]:
        raise MessageError(400, f"Role '{role['id']}' contained in role '{role['id']}' not found.")
    with call.state.edit() as data:
        data["roles"][role["id"]] = role
    return Response(200, _role_xo(role))


def role_update(call: Call) -> Response:
    bean = call.bind(ROLE)
    call.require("nexus:roles:update")
    rid = call.params["id"]
    if bean.get("id") != rid:
        raise MessageError(
            409, f"The Role id '{bean.get('id')}' does not match the id used in the path '{rid}'."
        )
    with call.state.read() as data:
        if rid not in data["roles"]:
            raise MessageError(404, f"Role '{rid}' not found.")
    _refuse_read_only(rid)
    role = _role_from(call, bean)
    with call.state.edit() as data:
        if _contains(data, role["roles"], rid):
            raise MessageError(400, f"Role '{rid}' cannot contain itself directly or through other roles.")
        data["roles"][rid] = role
    return Response(204)


def role_delete(call: Call) -> Response:
    call.require("nexus:roles:delete")
    rid = call.params["id"]
    with call.state.edit() as data:
        if rid not in data["roles"]:
            raise MessageError(404, f"Role '{rid}' not found.")
        _refuse_read_only(rid)
        del data["roles"][rid]
        for role in data["roles"].values():
            role["roles"] = [r for r in role["roles"] if r != rid]
        for user in data["users"].values():
            user["roles"] = [r for r in user["roles"] if r != rid]
    return Response(204)


# ------------------------------------------------------------------------------------------- users
def _api_user(user: dict[str, Any]) -> dict[str, Any]:
    return {
        "userId": user["userId"],
        "firstName": user["firstName"],
        "lastName": user["lastName"],
        "emailAddress": user["emailAddress"],
        "source": SOURCE,
        "status": user["status"],
        "readOnly": False,
        "roles": list(user["roles"]),
        "externalRoles": [],
    }


def _user_violations(bean: dict[str, Any], create: bool) -> None:
    v = Violations()
    v.not_blank(bean, "userId")
    v.not_empty(bean, "firstName")
    v.not_empty(bean, "lastName")
    v.not_empty(bean, "emailAddress")
    v.email(bean, "emailAddress")
    if create:
        v.not_empty(bean, "password")
    else:
        v.not_blank(bean, "source")
    v.not_null(bean, "status")
    v.not_empty(bean, "roles")
    v.raise_if_any()


def _check_roles(data: dict[str, Any], roles: list[str]) -> None:
    missing = [r for r in roles if r not in data["roles"]]
    if missing:
        raise ValidationFailed([("roles", f"Unable to locate roleId: {r}") for r in missing])


def users_list(call: Call) -> Response:
    call.require("nexus:users:read")
    source = call.q("source")
    if source not in (None, "", SOURCE):
        return Response(200, [])
    prefix = (call.q("userId") or "").lower()
    with call.state.read() as data:
        users = [u for uid, u in sorted(data["users"].items()) if uid.lower().startswith(prefix)]
        return Response(200, [_api_user(u) for u in users])


def user_create(call: Call) -> Response:
    bean = call.bind(CREATE_USER)
    call.require("nexus:users:create")
    _user_violations(bean, create=True)
    if not bean["password"].strip():
        raise MessageError(400, "A non-empty password is required.")
    roles = unique(bean["roles"])
    with call.state.edit() as data:
        _check_roles(data, roles)
        if bean["userId"] in data["users"]:
            raise Unexpected(
                "org.sonatype.nexus.security.user.DuplicateUserException",
                f"User {bean['userId']} already exists.",
            )
        user = {
            "userId": bean["userId"],
            "firstName": bean["firstName"],
            "lastName": bean["lastName"],
            "emailAddress": bean["emailAddress"],
            "status": bean["status"],
            "roles": roles,
            "password": hash_password(bean["password"]),
        }
        data["users"][user["userId"]] = user
    return Response(200, _api_user(user))


def user_update(call: Call) -> Response:
    bean = call.bind(USER)
    call.require("nexus:users:update")
    uid = call.params["userId"]
    _user_violations(bean, create=False)
    if bean["userId"] != uid:
        raise MessageError(400, "The path's userId does not match the body")
    with call.state.edit() as data:
        user = data["users"].get(uid)
        if user is None:
            raise MessageError(404, f"User '{uid}' not found.")
        roles = unique(bean["roles"])
        _check_roles(data, roles)
        user.update(
            {
                "firstName": bean["firstName"],
                "lastName": bean["lastName"],
                "emailAddress": bean["emailAddress"],
                "status": bean["status"],
                "roles": roles,
            }
        )
    return Response(204)


def user_delete(call: Call) -> Response:
    call.require("nexus:users:delete")
    uid = call.params["userId"]
    with call.state.edit() as data:
        if uid not in data["users"]:
            raise MessageError(404, f"User '{uid}' not found.")
        del data["users"][uid]
    return Response(204)


def user_change_password(call: Call) -> Response:
    call.require("nexus:*")
    uid = call.params["userId"]
    password = call.text()
    if not password.strip():
        raise MessageError(400, "Password must be supplied.")
    with call.state.edit() as data:
        user = data["users"].get(uid)
        if user is None:
            raise MessageError(404, f"User '{uid}' not found.")
        user["password"] = hash_password(password)
        if user["status"] == "changepassword":
            user["status"] = "active"  # [inferred] the onboarding wizard's change clears the flag
    if uid == "admin":
        call.state.admin_password_file.unlink(missing_ok=True)
    return Response(204)


ROUTES = [
    Route("GET", "/v1/security/realms/available", realms_available),
    Route("GET", "/v1/security/realms/active", realms_active),
    Route("PUT", "/v1/security/realms/active", realms_set_active, consumes="json"),
    Route("GET", "/v1/security/anonymous", anonymous_get),
    Route("PUT", "/v1/security/anonymous", anonymous_put, consumes="json"),
    Route("GET", "/v1/security/privileges", privileges_list),
    Route("POST", "/v1/security/privileges/repository-view", privilege_create, consumes="json"),
    Route("PUT", "/v1/security/privileges/repository-view/{name}", privilege_update, consumes="json"),
    Route("GET", "/v1/security/privileges/{name}", privilege_get),
    Route("DELETE", "/v1/security/privileges/{name}", privilege_delete),
    Route("GET", "/v1/security/roles", roles_list),
    Route("POST", "/v1/security/roles", role_create, consumes="json"),
    Route("GET", "/v1/security/roles/{id}", role_get),
    Route("PUT", "/v1/security/roles/{id}", role_update, consumes="json"),
    Route("DELETE", "/v1/security/roles/{id}", role_delete),
    Route("GET", "/v1/security/users", users_list),
    Route("POST", "/v1/security/users", user_create, consumes="json"),
    Route("PUT", "/v1/security/users/{userId}", user_update, consumes="json"),
    Route("DELETE", "/v1/security/users/{userId}", user_delete),
    Route("PUT", "/v1/security/users/{userId}/change-password", user_change_password, consumes="text"),
]
