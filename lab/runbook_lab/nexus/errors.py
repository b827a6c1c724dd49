"""The failures a Nexus REST resource can answer with, one class per documented body shape.

Shapes (contract.json `errorShapes`; NP components/nexus-siesta/.../internal/*
ExceptionMapper.java, components/nexus-rest/.../ExceptionMapperSupport.java):
- `StatusOnly`: an entity-less WebApplicationException (403, 404, 405, 415, 422); the body is empty because
  WebappExceptionMapper rebuilds the response without entity since 3.30 (CVE-2020-25633).
- `ValidationFailed`: bean validation, ValidationErrorsException, Jackson mapping errors: a JSON list of
  `{"id","message"}`.
- `MessageError`: WebApplicationMessageException: `{"id":"*","message":"\\"...\\""}` from 3.49, a bare JSON
  string before; the message text carries literal double quotes added by the thrower.
- `Unexpected`: any unmapped exception: 500 `text/plain` `ERROR: (ID <uuid>) <exception.toString()>`.
- `BadCredentials`: the Shiro Basic filter's 401 challenge (not a Siesta mapper, so no fault id).
Every Siesta-mapped response carries `X-Siesta-FaultId: <uuid>`; the rendering lives in rest.py because
the message-object shape depends on the configured version.
"""

from __future__ import annotations

BASIC_REALM = 'BASIC realm="Sonatype Nexus Repository Manager"'  # NexusBasicHttpAuthenticationFilter


class ApiError(Exception):
    status: int = 500


class StatusOnly(ApiError):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class ValidationFailed(ApiError):
    def __init__(self, errors: list[tuple[str, str]], status: int = 400) -> None:
        super().__init__(errors)
        self.errors = errors
        self.status = status


class MessageError(ApiError):
    """`quoted`: the resource wrapped the text in literal quotes (nearly all do)."""

    def __init__(
        self, status: int, message: str, quoted: bool = True, content_type: str = "application/json"
    ):
        super().__init__(message)
        self.status = status
        self.message = f'"{message}"' if quoted else message
        self.content_type = content_type


class Unexpected(ApiError):
    """An unmapped Java exception; `java_class` and `message` make up its toString()."""

    def __init__(self, java_class: str, message: str) -> None:
        super().__init__(message)
        self.status = 500
        self.java_class = java_class
        self.message = message


class FaultObject(ApiError):
    """A single ValidationErrorXO object, e.g. JsonProcessingExceptionMapper's
    `{"id":"*","message":"Could not process the input: ..."}` for malformed JSON."""

    def __init__(self, status: int, message: str, id_: str = "*") -> None:
        super().__init__(message)
        self.status = status
        self.id = id_
        self.message = message


class BadCredentials(ApiError):
    status = 401
