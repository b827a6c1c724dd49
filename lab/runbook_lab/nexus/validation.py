"""Request bodies as Nexus reads them: Jackson binding first, then bean validation.

Binding (NP ObjectMapperProvider + JsonMappingExceptionMapper):
- unknown properties are ignored; absent and null are both null in the bean;
- scalars coerce like Jackson's defaults ("true" -> true, "5" -> 5, 5 -> "5", 1.0 -> 1, "" -> null for
  numbers); a value of the wrong shape fails with a JsonMappingException, answered 400 with one
  `{"id": <field name>, "message": <Jackson message>}` per element of the JSON path (array indexes have no
  field name, so their id is null; a top-level mismatch gives an empty list);
- Java enums (privilege actions, user status) are matched case-insensitively (ACCEPT_CASE_INSENSITIVE_ENUMS).
Bean validation (ResteasyViolationExceptionMapper): every violated constraint becomes
`{"id": "PARAMETER <leaf property>", "message": <Hibernate Validator 6 message>}`; constraints below a null
object are not evaluated. Messages: "must not be null", "must not be empty", "must not be blank",
"must be greater than or equal to N", "must be less than or equal to N", "must be a well-formed email
address".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from runbook_lab.nexus.errors import ValidationFailed

NAME_REGEX = re.compile(r"^[a-zA-Z0-9\-]{1}[a-zA-Z0-9_\-\.]*$")  # NP NamePatternConstants.REGEX
NAME_MESSAGE = (
    "Only letters, digits, underscores(_), hyphens(-), and dots(.) are allowed and may not start "
    "with underscore or dot."
)
EMAIL_REGEX = re.compile(r"^[^@\s]+@[^@\s]+$")  # Hibernate @Email is lenient: local@domain


# ------------------------------------------------------------------------------------------ binding
@dataclass
class Spec:
    kind: str  # str | bool | int | obj | list | enum
    java: str = ""
    fields: dict[str, Spec] = field(default_factory=dict)
    item: Spec | None = None
    values: tuple[str, ...] = ()


def Str() -> Spec:
    return Spec("str", "java.lang.String")


def Bool() -> Spec:
    return Spec("bool", "java.lang.Boolean")


def Int() -> Spec:
    return Spec("int", "java.lang.Integer")


def Obj(java: str, **fields: Spec) -> Spec:
    return Spec("obj", java, dict(fields))


def ListOf(item: Spec, java: str = "java.util.List<java.lang.String>") -> Spec:
    return Spec("list", java, item=item)


def Enum(java: str, *values: str) -> Spec:
    return Spec("enum", java, values=values)


class MappingError(Exception):
    def __init__(self, path: list[str | None], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message

    def as_validation(self) -> ValidationFailed:
        return ValidationFailed([(p, self.message) for p in self.path])  # type: ignore[misc]


def _token(value: Any) -> str:
    if isinstance(value, dict):
        return "Object value (token `JsonToken.START_OBJECT`)"
    if isinstance(value, list):
        return "Array value (token `JsonToken.START_ARRAY`)"
    if isinstance(value, bool):
        return "Boolean value"
    if isinstance(value, str):
        return f'String "{value}"'
    return f"value {value}"


def bind(value: Any, spec: Spec, path: list[str | None] | None = None) -> Any:
    """Jackson-style binding of parsed JSON `value` to the bean described by `spec`."""
    path = path or []
    if value is None:
        return None
    if spec.kind == "obj":
        if not isinstance(value, dict):
            raise MappingError(
                path,
                f"Cannot construct instance of `{spec.java}` (although at least one "
                f"Creator exists): no {type(value).__name__}-argument constructor/factory "
                f"method to deserialize from {_token(value)}",
            )
        return {k: bind(value.get(k), sub, [*path, k]) for k, sub in spec.fields.items()}
    if spec.kind == "list":
        if not isinstance(value, list):
            raise MappingError(path, f"Cannot deserialize value of type `{spec.java}` from {_token(value)}")
        assert spec.item is not None
        return [bind(v, spec.item, [*path, None]) for v in value]
    if spec.kind == "str":
        if isinstance(value, (dict, list)):
            raise MappingError(
                path, f"Cannot deserialize value of type `java.lang.String` from {_token(value)}"
            )
        if isinstance(value, bool):
            return "true" if value else "false"
        return value if isinstance(value, str) else str(value)
    if spec.kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return value != 0
        if isinstance(value, str):
            if value.strip().lower() in ("true", "false"):
                return value.strip().lower() == "true"
            if value == "":
                return None
            raise MappingError(
                path,
                f'Cannot deserialize value of type `java.lang.Boolean` from String "{value}": '
                'only "true" or "false" recognized',
            )
        raise MappingError(path, f"Cannot deserialize value of type `java.lang.Boolean` from {_token(value)}")
    if spec.kind == "int":
        if isinstance(value, (bool, dict, list)):
            raise MappingError(
                path, f"Cannot deserialize value of type `java.lang.Integer` from {_token(value)}"
            )
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return int(value)
        text = str(value).strip()
        if text == "":
            return None
        try:
            return int(text)
        except ValueError:
            raise MappingError(
                path,
                f'Cannot deserialize value of type `java.lang.Integer` from String "{value}": '
                "not a valid `java.lang.Integer` value",
            ) from None
    if spec.kind == "enum":
        if isinstance(value, str):
            for v in spec.values:
                if v.lower() == value.lower():
                    return v
        raise MappingError(
            path,
            f"Cannot deserialize value of type `{spec.java}` from {_token(value)}: not one "
            f"of the values accepted for Enum class: [{', '.join(spec.values)}]",
        )
    raise AssertionError(spec.kind)


def bind_body(raw: Any, spec: Spec) -> Any:
    try:
        return bind(raw, spec)
    except MappingError as e:
        raise e.as_validation() from None


# ------------------------------------------------------------------------------------- violations
class Violations:
    """Collects bean-validation violations in document order."""

    def __init__(self, kind: str = "PARAMETER") -> None:
        self.kind = kind
        self.items: list[tuple[str, str]] = []

    def add(self, leaf: str, message: str, kind: str | None = None) -> None:
        self.items.append((f"{kind or self.kind} {leaf}", message))

    def not_null(self, bean: dict[str, Any], key: str) -> bool:
        if bean.get(key) is None:
            self.add(key, "must not be null")
            return False
        return True

    def not_empty(self, bean: dict[str, Any], key: str) -> bool:
        value = bean.get(key)
        if value is None or len(value) == 0:
            self.add(key, "must not be empty")
            return False
        return True

    def not_blank(self, bean: dict[str, Any], key: str) -> bool:
        value = bean.get(key)
        if value is None or not str(value).strip():
            self.add(key, "must not be blank")
            return False
        return True

    def within(self, bean: dict[str, Any], key: str, low: int | None, high: int | None) -> None:
        value = bean.get(key)
        if value is None:
            return
        if low is not None and value < low:
            self.add(key, f"must be greater than or equal to {low}")
        if high is not None and value > high:
            self.add(key, f"must be less than or equal to {high}")

    def name(self, bean: dict[str, Any], key: str = "name") -> None:
        """@NotEmpty + @Pattern(NamePatternConstants): an empty string violates both."""
        value = bean.get(key)
        if value is None or value == "":
            self.add(key, "must not be empty")
        if value is not None and not NAME_REGEX.fullmatch(value):
            self.add(key, NAME_MESSAGE)

    def email(self, bean: dict[str, Any], key: str) -> None:
        value = bean.get(key)
        if value and not EMAIL_REGEX.fullmatch(value):
            self.add(key, "must be a well-formed email address")

    def raise_if_any(self) -> None:
        if self.items:
            raise ValidationFailed(self.items)


# ------------------------------------------------------------------------------- request specs
def _storage() -> Spec:
    return Obj(
        "org.sonatype.nexus.repository.rest.api.model.StorageAttributes",
        blobStoreName=Str(),
        strictContentTypeValidation=Bool(),
        writePolicy=Str(),
    )


def _docker() -> Spec:
    return Obj(
        "org.sonatype.nexus.repository.docker.rest.api.model.DockerAttributes",
        v1Enabled=Bool(),
        forceBasicAuth=Bool(),
        httpPort=Int(),
        httpsPort=Int(),
        subdomain=Str(),
        pathEnabled=Bool(),
    )


def docker_proxy_spec(routing_field: str) -> Spec:
    return Obj(
        "org.sonatype.nexus.repository.docker.rest.api.model.DockerProxyRepositoryApiRequest",
        name=Str(),
        online=Bool(),
        storage=_storage(),
        cleanup=Obj(
            "org.sonatype.nexus.repository.rest.api.model.CleanupPolicyAttributes", policyNames=ListOf(Str())
        ),
        proxy=Obj(
            "org.sonatype.nexus.repository.rest.api.model.ProxyAttributes",
            remoteUrl=Str(),
            contentMaxAge=Int(),
            metadataMaxAge=Int(),
            preserveEncodedCharacters=Bool(),
        ),
        negativeCache=Obj(
            "org.sonatype.nexus.repository.rest.api.model.NegativeCacheAttributes",
            enabled=Bool(),
            timeToLive=Int(),
        ),
        httpClient=Obj(
            "org.sonatype.nexus.repository.rest.api.model.HttpClientAttributes",
            blocked=Bool(),
            autoBlock=Bool(),
            connection=Obj(
                "org.sonatype.nexus.repository.rest.api.model.HttpClientConnectionAttributes",
                retries=Int(),
                userAgentSuffix=Str(),
                timeout=Int(),
                enableCircularRedirects=Bool(),
                enableCookies=Bool(),
                useTrustStore=Bool(),
            ),
            authentication=Obj(
                "org.sonatype.nexus.repository.rest.api.model.HttpClientConnectionAuthenticationAttributes",
                type=Str(),
                username=Str(),
                password=Str(),
                ntlmHost=Str(),
                ntlmDomain=Str(),
                bearerToken=Str(),
                preemptive=Bool(),
            ),
        ),
        **{routing_field: Str()},
        replication=Obj(
            "org.sonatype.nexus.repository.rest.api.model.ReplicationAttributes",
            preemptivePullEnabled=Bool(),
            assetPathRegex=Str(),
        ),
        docker=_docker(),
        dockerProxy=Obj(
            "org.sonatype.nexus.repository.docker.rest.api.model.DockerProxyAttributes",
            indexType=Str(),
            indexUrl=Str(),
            cacheForeignLayers=Bool(),
            foreignLayerUrlWhitelist=ListOf(Str()),
            ecrAuth=Obj(
                "org.sonatype.nexus.repository.docker.rest.api.model.EcrAuthAttributes",
                enabled=Bool(),
                awsRegion=Str(),
                registryId=Str(),
                accessKeyId=Str(),
                secretAccessKey=Str(),
            ),
        ),
    )


DOCKER_GROUP = Obj(
    "org.sonatype.nexus.repository.docker.rest.api.model.DockerGroupRepositoryApiRequest",
    name=Str(),
    online=Bool(),
    storage=_storage(),
    group=Obj(
        "org.sonatype.nexus.repository.rest.api.model.GroupDeployAttributes",
        memberNames=ListOf(Str()),
        writableMember=Str(),
    ),
    docker=_docker(),
)

DOCKER_HOSTED = Obj(
    "org.sonatype.nexus.repository.docker.rest.api.model.DockerHostedRepositoryApiRequest",
    name=Str(),
    online=Bool(),
    storage=Obj(
        "org.sonatype.nexus.repository.docker.rest.api.model.DockerHostedStorageAttributes",
        blobStoreName=Str(),
        strictContentTypeValidation=Bool(),
        writePolicy=Str(),
        latestPolicy=Bool(),
    ),
    cleanup=Obj(
        "org.sonatype.nexus.repository.rest.api.model.CleanupPolicyAttributes", policyNames=ListOf(Str())
    ),
    component=Obj(
        "org.sonatype.nexus.repository.rest.api.model.ComponentAttributes", proprietaryComponents=Bool()
    ),
    docker=_docker(),
)

PRIVILEGE_ACTION = Enum(
    "org.sonatype.nexus.security.privilege.rest.PrivilegeAction",
    "READ",
    "BROWSE",
    "EDIT",
    "ADD",
    "DELETE",
    "RUN",
    "START",
    "STOP",
    "ASSOCIATE",
    "DISASSOCIATE",
    "ALL",
)
REPOSITORY_VIEW_PRIVILEGE = Obj(
    "org.sonatype.nexus.repository.security.rest.ApiPrivilegeRepositoryViewRequest",
    name=Str(),
    description=Str(),
    actions=ListOf(PRIVILEGE_ACTION, "java.util.Collection<PrivilegeAction>"),
    format=Str(),
    repository=Str(),
)

ROLE = Obj(
    "org.sonatype.nexus.security.role.rest.RoleXORequest",
    id=Str(),
    name=Str(),
    description=Str(),
    privileges=ListOf(Str(), "java.util.Set<java.lang.String>"),
    roles=ListOf(Str(), "java.util.Set<java.lang.String>"),
)

USER_STATUS = Enum(
    "org.sonatype.nexus.security.internal.rest.ApiUserStatus",
    "active",
    "locked",
    "disabled",
    "changepassword",
)
CREATE_USER = Obj(
    "org.sonatype.nexus.security.internal.rest.ApiCreateUser",
    userId=Str(),
    firstName=Str(),
    lastName=Str(),
    emailAddress=Str(),
    password=Str(),
    status=USER_STATUS,
    roles=ListOf(Str(), "java.util.Set<java.lang.String>"),
)
USER = Obj(
    "org.sonatype.nexus.security.internal.rest.ApiUser",
    userId=Str(),
    firstName=Str(),
    lastName=Str(),
    emailAddress=Str(),
    source=Str(),
    status=USER_STATUS,
    readOnly=Bool(),
    roles=ListOf(Str(), "java.util.Set<java.lang.String>"),
    externalRoles=ListOf(Str(), "java.util.Set<java.lang.String>"),
)

ANONYMOUS = Obj(
    "org.sonatype.nexus.security.anonymous.rest.AnonymousAccessSettingsXO",
    enabled=Bool(),
    userId=Str(),
    realmName=Str(),
)
EULA = Obj("org.sonatype.nexus.internal.security.rest.EulaStatus", accepted=Bool(), disclaimer=Str())
REALM_IDS = ListOf(Str(), "java.util.List<java.lang.String>")


def unique(values: list[str] | None) -> list[str]:
    """A Java Set<String> built from a JSON array keeps the first occurrence of each value."""
    return list(dict.fromkeys(values or []))
