"""Minimal CRI `runtime.v1.ImageService` client: what kubelet asks containerd when a pod needs an image.

crictl is not packaged in Debian bookworm, so the lab talks CRI itself over containerd's socket with
grpcio and a tiny hand-written protobuf codec (no protoc, no generated code). Only the messages below
are encoded; field numbers follow k8s.io/cri-api pkg/apis/runtime/v1/api.proto (kubernetes/kubernetes
staging/src/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto), which served `runtime.v1` since Kubernetes
1.20 without renumbering:

    message ImageSpec           { string image = 1; map<string,string> annotations = 2; ... }
    message AuthConfig          { string username = 1; string password = 2; string auth = 3;
                                  string server_address = 4; ... }
    message PullImageRequest    { ImageSpec image = 1; AuthConfig auth = 2;
                                  PodSandboxConfig sandbox_config = 3; }   // sandbox_config omitted
    message PullImageResponse   { string image_ref = 1; }
    message ImageStatusRequest  { ImageSpec image = 1; bool verbose = 2; }
    message ImageStatusResponse { Image image = 1; map<string,string> info = 2; }  // image unset = absent
    message ListImagesRequest   { ImageFilter filter = 1; }
    message ListImagesResponse  { repeated Image images = 1; }
    message RemoveImageRequest  { ImageSpec image = 1; }
    message Image               { string id = 1; repeated string repo_tags = 2;
                                  repeated string repo_digests = 3; uint64 size = 4; ... }

Wire format (protobuf encoding guide): each field is a varint key `field_number << 3 | wire_type`;
wire type 0 = varint, 1 = 64-bit, 2 = length-delimited (strings, bytes, sub-messages), 5 = 32-bit.
proto3 leaves fields at their default value (empty string, 0) out of the encoding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import grpc

# -- protobuf wire format ----------------------------------------------------------------------------

WIRE_VARINT = 0
WIRE_FIXED64 = 1
WIRE_LEN = 2
WIRE_FIXED32 = 5


def encode_varint(value: int) -> bytes:
    """Base-128 varint, least significant group first (only non-negative values are needed here)."""
    if value < 0:
        raise ValueError("negative varints are not used by these messages")
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def encode_len_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes or embedded message)."""
    return encode_varint(number << 3 | WIRE_LEN) + encode_varint(len(payload)) + payload


def encode_string(number: int, value: str | None) -> bytes:
    """A proto3 string field; empty or missing strings are not encoded."""
    return encode_len_field(number, value.encode()) if value else b""


def encode_varint_field(number: int, value: int) -> bytes:
    return encode_varint(number << 3 | WIRE_VARINT) + encode_varint(value) if value else b""


def decode_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Returns (value, position after the varint)."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def decode_fields(buf: bytes) -> dict[int, list[int | bytes]]:
    """Splits a message into {field number: [values in order]}; varints as int, everything else bytes."""
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(buf):
        key, pos = decode_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0 is invalid")
        value: int | bytes
        if wire == WIRE_VARINT:
            value, pos = decode_varint(buf, pos)
        elif wire == WIRE_LEN:
            length, pos = decode_varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated length-delimited field")
            value, pos = buf[pos : pos + length], pos + length
        elif wire in (WIRE_FIXED64, WIRE_FIXED32):
            width = 8 if wire == WIRE_FIXED64 else 4
            if pos + width > len(buf):
                raise ValueError("truncated fixed-width field")
            value, pos = buf[pos : pos + width], pos + width
        else:  # 3/4 are deprecated groups, 6/7 do not exist
            raise ValueError(f"unsupported wire type {wire} for field {number}")
        fields.setdefault(number, []).append(value)
    return fields


def _strings(fields: dict[int, list[int | bytes]], number: int) -> list[str]:
    return [v.decode() for v in fields.get(number, []) if isinstance(v, bytes)]


def _first_string(fields: dict[int, list[int | bytes]], number: int) -> str:
    # proto3: for a repeated occurrence of a singular field the last one wins
    values = _strings(fields, number)
    return values[-1] if values else ""


def _first_int(fields: dict[int, list[int | bytes]], number: int) -> int:
    values = [v for v in fields.get(number, []) if isinstance(v, int)]
    return values[-1] if values else 0


# -- CRI messages ------------------------------------------------------------------------------------


def image_spec(image: str) -> bytes:
    return encode_string(1, image)  # ImageSpec.image = 1


def auth_config(username: str | None, password: str | None) -> bytes:
    return encode_string(1, username) + encode_string(2, password)  # AuthConfig.username = 1, password = 2


def pull_image_request(image: str, username: str | None = None, password: str | None = None) -> bytes:
    body = encode_len_field(1, image_spec(image))  # PullImageRequest.image = 1
    if username or password:
        body += encode_len_field(2, auth_config(username, password))  # PullImageRequest.auth = 2
    return body


def image_request(image: str) -> bytes:
    """ImageStatusRequest and RemoveImageRequest both carry ImageSpec as field 1."""
    return encode_len_field(1, image_spec(image))


@dataclass(frozen=True)
class CRIImage:
    """runtime.v1.Image (the fields the lab needs)."""

    id: str
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    size: int = 0

    @classmethod
    def decode(cls, buf: bytes) -> CRIImage:
        f = decode_fields(buf)
        return cls(
            id=_first_string(f, 1),
            repo_tags=_strings(f, 2),
            repo_digests=_strings(f, 3),
            size=_first_int(f, 4),
        )


class CRIError(Exception):
    """A failed CRI call, with the gRPC status code and containerd's error text."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"CRI {method} failed: {code.name}: {details}")
        self.method = method
        self.code = code
        self.details = details


class CRIImageClient:
    """`runtime.v1.ImageService` on a containerd socket (containerd 1.6 serves v1 and v1alpha2)."""

    SERVICE = "/runtime.v1.ImageService/"

    def __init__(self, socket_path: str, timeout: float = 120.0) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout
        self._channel = grpc.insecure_channel("unix://" + self.socket_path)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CRIImageClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request: bytes, timeout: float | None = None) -> bytes:
        stub = self._channel.unary_unary(
            self.SERVICE + method,
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        try:
            return stub(request, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            # the raised object is also a grpc.Call, which carries code() and details()
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            details = (exc.details() if isinstance(exc, grpc.Call) else str(exc)) or ""
            raise CRIError(method, code, details) from None

    def pull(self, image: str, username: str | None = None, password: str | None = None) -> tuple[str, float]:
        """PullImage; returns (image_ref, seconds). containerd 1.6 returns the image id (sha256:...)."""
        started = time.monotonic()
        reply = self._call("PullImage", pull_image_request(image, username, password))
        seconds = time.monotonic() - started
        return _first_string(decode_fields(reply), 1), seconds  # PullImageResponse.image_ref = 1

    def status(self, image: str) -> CRIImage | None:
        """ImageStatus; None when the runtime does not have the image (the response's image is unset)."""
        images = decode_fields(self._call("ImageStatus", image_request(image))).get(1, [])
        raw = images[-1] if images else None
        return CRIImage.decode(raw) if isinstance(raw, bytes) else None

    def list(self) -> list[CRIImage]:
        """ListImages without a filter (the empty request)."""
        reply = decode_fields(self._call("ListImages", b""))
        return [CRIImage.decode(raw) for raw in reply.get(1, []) if isinstance(raw, bytes)]

    def remove(self, image: str) -> None:
        """RemoveImage; idempotent per the CRI contract (removing an absent image is not an error)."""
        self._call("RemoveImage", image_request(image))
