"""Secret references and the redactor.

Parameters never hold a secret, only a reference to where it lives:

    env:NAME                      an environment variable
    file:PATH                     a file's content (trailing newline dropped); relative to the parameters file
    aws-sm:SECRET_ID[#json_key]   AWS Secrets Manager (boto3), optionally one key of a JSON secret
    k8s:NAMESPACE/NAME#key        a key of a Kubernetes Secret

Resolvers are registered per scheme (like papermill's I/O handlers), so new stores plug in without
touching callers. Every resolved value is registered with the process-wide redactor, which scrubs the
value and its encoded forms from anything we save.
"""

from __future__ import annotations

import base64
import collections
import html
import json
import os
import re
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


MASK = "***"


@dataclass(frozen=True)
class SecretRef:
    scheme: str
    target: str  # variable name, path, secret id or namespace/name
    key: str | None = None

    def __str__(self) -> str:
        return f"{self.scheme}:{self.target}" + (f"#{self.key}" if self.key else "")


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_K8S_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_K8S_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def parse_ref(text: str) -> SecretRef:
    """Parse a reference; raise ValueError saying what a valid one looks like."""
    if not isinstance(text, str) or ":" not in text:
        raise ValueError(
            "must be a secret reference (env:NAME, file:PATH, aws-sm:ID[#key], "
            "k8s:NAMESPACE/NAME#key), not a value"
        )
    scheme, rest = text.split(":", 1)
    if scheme == "env":
        if not _ENV_NAME.match(rest):
            raise ValueError("env reference needs a variable name (letters, digits, '_')")
        return SecretRef("env", rest)
    if scheme == "file":
        if not rest.strip():
            raise ValueError("file reference needs a path")
        return SecretRef("file", rest)
    if scheme == "aws-sm":
        sid, _, key = rest.partition("#")
        if not sid or (_ and not key):
            raise ValueError("aws-sm reference is aws-sm:SECRET_ID or aws-sm:SECRET_ID#json_key")
        return SecretRef("aws-sm", sid, key or None)
    if scheme == "k8s":
        path, _, key = rest.partition("#")
        ns, _, name = path.partition("/")
        if not (key and _K8S_NAME.match(ns) and _K8S_SECRET_NAME.match(name) and _K8S_KEY.match(key)):
            raise ValueError("k8s reference is k8s:NAMESPACE/NAME#key with Kubernetes names")
        return SecretRef("k8s", f"{ns}/{name}", key)
    # never quote the scheme: in `hunter2:x` the "scheme" is part of a pasted value
    raise ValueError("unknown secret scheme: use env:, file:, aws-sm: or k8s:")


class SecretError(Exception):
    """A reference could not be resolved. Never carries the value."""


# ------------------------------------------------------------------------------------------ redactor
class Redactor:
    """Knows every secret value this process resolved and scrubs them and their encodings from text."""

    MIN_LEN = 4  # shorter values would scrub ordinary text; refuse to treat them as secrets

    def __init__(self) -> None:
        self._forms: set[str] = set()  # every form scrubbed now: the permanent ones and the held ones
        self._permanent: set[str] = set()
        self._held: collections.Counter[str] = collections.Counter()  # value -> holders
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None

    @staticmethod
    def forms(value: str, users: tuple[str, ...] = ()) -> set[str]:
        raw = value.encode()
        out = {
            value,
            base64.b64encode(raw).decode(),
            base64.urlsafe_b64encode(raw).decode(),
            base64.b64encode(raw).decode().rstrip("="),
            urllib.parse.quote(value, safe=""),
            urllib.parse.quote_plus(value),
            json.dumps(value)[1:-1],  # as it appears inside a JSON string
            json.dumps(value, ensure_ascii=False)[1:-1],
            html.escape(value, quote=True),  # an HTML rendering, e.g. a DataFrame's to_html
            html.escape(value, quote=False),
        }
        for user in users:
            pair = f"{user}:{value}".encode()
            out.add(base64.b64encode(pair).decode())
            out.add(base64.b64encode(pair).decode().rstrip("="))
        return {f for f in out if f}

    def add(self, value: str, users: tuple[str, ...] = ()) -> None:
        if not value or len(value) < self.MIN_LEN:
            return
        with self._lock:
            forms = self.forms(value, users)
            self._permanent |= forms
            self._forms |= forms
            self._pattern = None

    def hold(self, value: str) -> None:
        """Scrub a short-lived secret (a registry bearer token) until ``release``: while the client that
        holds it is open. Kept for good, a fresh client per pull sample adds ~10 forms a sample, and the
        pattern rebuilt from thousands of forms made every later scrub slower (a verification run of
        200 pulls slowed itself down several-fold). Output made while it is held is scrubbed of it."""
        if not value or len(value) < self.MIN_LEN:
            return
        with self._lock:
            self._held[value] += 1
            if self._held[value] == 1:
                self._forms |= self.forms(value)
                self._pattern = None

    def release(self, value: str) -> None:
        with self._lock:
            if self._held[value] > 1:
                self._held[value] -= 1
                return
            self._held.pop(value, None)
            self._forms = self._permanent | {f for v in self._held for f in self.forms(v)}
            self._pattern = None

    def add_pair(self, user: str, value: str) -> None:
        """Register a user's password, including the Basic-auth form base64(user:password)."""
        self.add(value, (user,))

    def clear(self) -> None:
        with self._lock:
            self._forms.clear()
            self._permanent.clear()
            self._held.clear()
            self._pattern = None

    @property
    def active(self) -> bool:
        return bool(self._forms)

    def scrub(self, text: str) -> str:
        if not self._forms or not text:
            return text
        with self._lock:
            if self._pattern is None:
                alts = sorted(self._forms, key=len, reverse=True)  # longest first: b64 forms before raw
                self._pattern = re.compile("|".join(re.escape(a) for a in alts))
            pattern = self._pattern
        return pattern.sub(MASK, text)

    def scrub_obj(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.scrub(obj)
        if isinstance(obj, dict):
            return {self.scrub(k) if isinstance(k, str) else k: self.scrub_obj(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.scrub_obj(v) for v in obj]
        return obj


REDACTOR = Redactor()


# ----------------------------------------------------------------------------------------- resolvers
Resolver = Callable[[SecretRef, "ResolveContext"], str]
# What stage code receives: (reference, user or None) -> value, already registered with the redactor.
SecretResolver = Callable[[str, "str | None"], str]


@dataclass
class ResolveContext:
    base_dir: Path = Path(".")
    aws_region: str | None = None
    aws_endpoint_url: str | None = None
    api_client: ApiClient | None = None  # a kubernetes.client.ApiClient, when the run has one
    aws_client: Callable[[str], Any] | None = None  # service name -> boto3 client (region, endpoint, creds)


_RESOLVERS: dict[str, Resolver] = {}


def register_resolver(scheme: str, resolver: Resolver) -> None:
    _RESOLVERS[scheme] = resolver


def _env(ref: SecretRef, ctx: ResolveContext) -> str:
    try:
        return os.environ[ref.target]
    except KeyError:
        raise SecretError(f"{ref}: environment variable {ref.target} is not set") from None


def _file(ref: SecretRef, ctx: ResolveContext) -> str:
    path = Path(ref.target).expanduser()
    if not path.is_absolute():
        path = ctx.base_dir / path
    try:
        return path.read_text().rstrip("\r\n")
    except OSError as err:
        raise SecretError(f"{ref}: cannot read {path}: {err.strerror}") from None


def _json_key(ref: SecretRef, text: str) -> str:
    if not ref.key:
        return text
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        raise SecretError(f"{ref}: secret is not JSON, cannot take key {ref.key}") from None
    if not isinstance(doc, dict) or ref.key not in doc:
        raise SecretError(f"{ref}: JSON secret has no key {ref.key}")
    return str(doc[ref.key])


def _aws_sm(ref: SecretRef, ctx: ResolveContext) -> str:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    if ctx.aws_client is not None:
        client = ctx.aws_client("secretsmanager")
    else:
        client = boto3.client("secretsmanager", region_name=ctx.aws_region, endpoint_url=ctx.aws_endpoint_url)
    try:
        resp = client.get_secret_value(SecretId=ref.target)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "error")
        raise SecretError(f"{ref}: Secrets Manager answered {code}") from None
    except BotoCoreError as err:
        raise SecretError(f"{ref}: Secrets Manager unreachable: {type(err).__name__}") from None
    text = resp.get("SecretString")
    if text is None:
        text = base64.b64decode(resp["SecretBinary"]).decode()
    return _json_key(ref, text)


def _k8s(ref: SecretRef, ctx: ResolveContext) -> str:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    if ctx.api_client is None:
        raise SecretError(f"{ref}: no Kubernetes connection configured for this run")
    ns, name = ref.target.split("/", 1)
    try:
        secret = client.CoreV1Api(ctx.api_client).read_namespaced_secret(name, ns)
    except ApiException as err:
        raise SecretError(f"{ref}: Kubernetes answered {err.status} {err.reason}") from None
    data = (secret.data or {}) if secret else {}
    if ref.key not in data:
        raise SecretError(f"{ref}: Secret has no key {ref.key}")
    return base64.b64decode(data[ref.key]).decode()


register_resolver("env", _env)
register_resolver("file", _file)
register_resolver("aws-sm", _aws_sm)
register_resolver("k8s", _k8s)


def resolve(ref: str | SecretRef, ctx: ResolveContext | None = None, user: str | None = None) -> str:
    """Resolve a reference and register the value (and user:value) with the redactor."""
    parsed = parse_ref(ref) if isinstance(ref, str) else ref
    ctx = ctx or ResolveContext()
    try:
        resolver = _RESOLVERS[parsed.scheme]
    except KeyError:
        raise SecretError(f"{parsed}: no resolver for scheme {parsed.scheme}") from None
    value = resolver(parsed, ctx)
    if user:
        REDACTOR.add_pair(user, value)
    else:
        REDACTOR.add(value)
    return value
