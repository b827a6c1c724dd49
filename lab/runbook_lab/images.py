"""Synthetic OCI / Docker images built offline, and a Registry v2 pusher.

The lab has no internet, so its upstream registries are filled with images made here. They must be
real enough for containerd: every layer is a gzip tar whose config lists the sha256 of the
*uncompressed* tar in `rootfs.diff_ids` (containerd checks this when it unpacks), and digests are
the sha256 of the exact bytes the registry serves.

File layers are deterministic (sorted entries, mtime 0, uid/gid 0, gzip header with mtime 0), so
an image built from the same files always has the same digest. Random layers stream to disk in
1 MiB chunks (a multi-GiB layer never sits in memory); with a seed they are reproducible too, which
keeps lab seeding idempotent.

The push sequence (HEAD blob, POST + monolithic PUT, child manifests by digest, then the tag) is
the Registry v2 push protocol (OCI distribution spec, opencontainers/distribution-spec spec.md).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import httpx

Media = Literal["oci", "docker"]

MEDIA_TYPES: dict[str, dict[str, str]] = {
    "oci": {
        "manifest": "application/vnd.oci.image.manifest.v1+json",
        "index": "application/vnd.oci.image.index.v1+json",
        "config": "application/vnd.oci.image.config.v1+json",
        "layer": "application/vnd.oci.image.layer.v1.tar+gzip",
    },
    "docker": {
        "manifest": "application/vnd.docker.distribution.manifest.v2+json",
        "index": "application/vnd.docker.distribution.manifest.list.v2+json",
        "config": "application/vnd.docker.container.image.v1+json",
        "layer": "application/vnd.docker.image.rootfs.diff.tar.gzip",
    },
}
INDEX_MEDIA_TYPES = {MEDIA_TYPES["oci"]["index"], MEDIA_TYPES["docker"]["index"]}

CHUNK = 1 << 20
FILE_LAYER_GZIP_LEVEL = 6
RANDOM_LAYER_GZIP_LEVEL = 1  # random bytes do not compress; level 1 is the fastest real deflate
EXECUTABLE_DIRS = ("bin/", "sbin/", "usr/bin/", "usr/sbin/", "usr/local/bin/")
DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Blob:
    """A content-addressed blob: small ones in memory (`data`), big ones on disk (`path`)."""

    digest: str
    size: int
    media_type: str
    path: Path | None = None
    data: bytes | None = None
    diff_id: str | None = None  # layers only: sha256 of the uncompressed tar

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        if self.data is not None:
            for i in range(0, len(self.data), size):
                yield self.data[i : i + size]
            return
        if self.path is None:
            raise ValueError(f"blob {self.digest} has neither data nor path")
        with self.path.open("rb") as f:
            while chunk := f.read(size):
                yield chunk

    def read(self) -> bytes:
        """The whole blob; meant for small blobs (configs, file layers)."""
        return self.data if self.data is not None else b"".join(self.chunks())

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass
class Image:
    """A manifest (with config + layer blobs) or an index (with child images)."""

    manifest: bytes
    media_type: str
    digest: str
    blobs: list[Blob] = field(default_factory=list)
    children: list[Image] = field(default_factory=list)
    platform: str | None = None

    @property
    def size(self) -> int:
        return len(self.manifest)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES

    def all_blobs(self) -> list[Blob]:
        if self.is_index:
            return [b for child in self.children for b in child.all_blobs()]
        return list(self.blobs)


# -- layers ------------------------------------------------------------------------------------
class _LayerSink:
    """File-like target for tarfile: hashes the raw tar (diff_id), gzips it, hashes and stores the result."""

    def __init__(self, out: IO[bytes], level: int):
        self._out = out
        self._raw_hash = hashlib.sha256()
        self._gz_hash = hashlib.sha256()
        # wbits=31: a gzip wrapper whose header has mtime 0 and no file name, so output is reproducible
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, 31)
        self.raw_size = 0
        self.size = 0

    def write(self, data: bytes) -> int:
        self._raw_hash.update(data)
        self.raw_size += len(data)
        self._emit(self._deflate.compress(data))
        return len(data)

    def tell(self) -> int:
        return self.raw_size

    def finish(self) -> tuple[str, str]:
        self._emit(self._deflate.flush())
        return "sha256:" + self._gz_hash.hexdigest(), "sha256:" + self._raw_hash.hexdigest()

    def _emit(self, data: bytes) -> None:
        if data:
            self._gz_hash.update(data)
            self._out.write(data)
            self.size += len(data)


class _SeededBytes:
    """Endless pseudo-random (or os.urandom) bytes with a read(n) that always returns n bytes."""

    def __init__(self, seed: str | None):
        self._rng = random.Random(seed) if seed is not None else random.SystemRandom()

    def read(self, n: int) -> bytes:
        return self._rng.randbytes(n)


def _tar_info(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if directory:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.size = size
        info.mode = 0o755 if name.startswith(EXECUTABLE_DIRS) else 0o644
    return info


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def file_layer(files: dict[str, bytes], media: Media = "oci") -> Blob:
    """A deterministic gzip tar layer of `files` (path -> content), with parent directory entries."""
    clean = {p.strip("/"): d for p, d in files.items()}
    dirs = {d for p in clean for d in _parents(p)} - set(clean)
    buf = io.BytesIO()
    sink = _LayerSink(buf, FILE_LAYER_GZIP_LEVEL)
    tar_open: Any = tarfile.open  # typeshed has no overload for fileobj + format together
    with tar_open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(dirs | set(clean)):
            if name in dirs:
                tar.addfile(_tar_info(name, directory=True))
            else:
                tar.addfile(_tar_info(name, len(clean[name])), io.BytesIO(clean[name]))
    digest, diff_id = sink.finish()
    return Blob(digest, sink.size, MEDIA_TYPES[media]["layer"], data=buf.getvalue(), diff_id=diff_id)


def random_layer(
    size: int, workdir: Path, media: Media = "oci", seed: str | None = None, name: str = "payload.bin"
) -> Blob:
    """A layer holding one file of `size` random bytes, gzipped (level 1) straight to disk.

    With a seed the bytes (and so the digests) are reproducible and an earlier build in `workdir`
    is reused; without one the layer is new every time (os.urandom-grade randomness).
    """
    layers_dir = workdir / "layers"
    layers_dir.mkdir(parents=True, exist_ok=True)
    layer_type = MEDIA_TYPES[media]["layer"]
    if seed is not None:
        key = hashlib.sha256(f"{seed}|{size}|{name}|gz{RANDOM_LAYER_GZIP_LEVEL}".encode()).hexdigest()[:24]
        meta_path = layers_dir / f"{key}.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            blob_path = layers_dir / f"{meta['digest'][7:]}.tar.gz"
            if blob_path.exists() and blob_path.stat().st_size == meta["size"]:
                return Blob(meta["digest"], meta["size"], layer_type, path=blob_path, diff_id=meta["diff_id"])
    tmp = layers_dir / f".building-{random.SystemRandom().getrandbits(64):016x}"
    try:
        with tmp.open("wb") as out:
            sink = _LayerSink(out, RANDOM_LAYER_GZIP_LEVEL)
            with tarfile.open(
                fileobj=sink,
                mode="w",
                format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                copybufsize=CHUNK,
            ) as tar:
                tar.addfile(_tar_info(name, size), _SeededBytes(seed))
            digest, diff_id = sink.finish()
        blob_path = layers_dir / f"{digest[7:]}.tar.gz"
        tmp.replace(blob_path)
    finally:
        tmp.unlink(missing_ok=True)
    if seed is not None:
        meta_path.write_text(json.dumps({"digest": digest, "size": sink.size, "diff_id": diff_id}))
    return Blob(digest, sink.size, layer_type, path=blob_path, diff_id=diff_id)


# -- images ------------------------------------------------------------------------------------
def parse_platform(platform: str) -> dict[str, str]:
    """'linux/arm64/v8' -> {'os': 'linux', 'architecture': 'arm64', 'variant': 'v8'}"""
    parts = platform.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform must look like os/arch[/variant], got {platform!r}")
    out = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        out["variant"] = parts[2]
    return out


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def build_image(
    files: dict[str, bytes] | None = None,
    layers: list[dict[str, bytes]] | None = None,
    platform: str = "linux/amd64",
    workdir: Path | None = None,
    random_layer_bytes: list[int] | None = None,
    media: Media = "oci",
    *,
    seed: str | None = None,
    container_config: dict[str, Any] | None = None,
) -> Image:
    """One single-platform image.

    Layers, bottom to top: `files` (one layer), then each dict in `layers`, then one random layer
    per entry of `random_layer_bytes` (these need `workdir`; `seed` makes them reproducible).
    `container_config` overrides the config's `config` section (Cmd, Env, ExposedPorts, ...).
    """
    if media not in MEDIA_TYPES:
        raise ValueError(f"media must be 'oci' or 'docker', got {media!r}")
    plat = parse_platform(platform)
    blobs: list[Blob] = []
    history: list[dict[str, Any]] = []
    for layer_files in ([files] if files else []) + list(layers or []):
        blobs.append(file_layer(layer_files, media))
        history.append(
            {"created": "1970-01-01T00:00:00Z", "created_by": "lab: COPY " + " ".join(sorted(layer_files))}
        )
    if random_layer_bytes:
        if workdir is None:
            raise ValueError("random layers are written to disk: pass workdir")
        for i, size in enumerate(random_layer_bytes):
            layer_seed = None if seed is None else f"{seed}|{platform}|{i}"
            blobs.append(random_layer(size, workdir, media, layer_seed, name=f"payload-{i}.bin"))
            history.append(
                {"created": "1970-01-01T00:00:00Z", "created_by": f"lab: random payload {size} bytes"}
            )
    if not blobs:
        blobs.append(file_layer({"etc/lab-image": f"{platform}\n".encode()}, media))
        history.append({"created": "1970-01-01T00:00:00Z", "created_by": "lab: COPY etc/lab-image"})

    cfg_section: dict[str, Any] = {"Env": list(DEFAULT_ENV), "Cmd": ["/bin/sh"], "WorkingDir": "/"}
    cfg_section.update(container_config or {})
    config: dict[str, Any] = {"created": "1970-01-01T00:00:00Z", "architecture": plat["architecture"]}
    if "variant" in plat:
        config["variant"] = plat["variant"]
    config["os"] = plat["os"]
    config["config"] = cfg_section
    config["rootfs"] = {"type": "layers", "diff_ids": [b.diff_id for b in blobs]}
    config["history"] = history
    config_bytes = _json_bytes(config)
    config_blob = Blob(
        sha256_digest(config_bytes), len(config_bytes), MEDIA_TYPES[media]["config"], data=config_bytes
    )

    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPES[media]["manifest"],
        "config": config_blob.descriptor(),
        "layers": [b.descriptor() for b in blobs],
    }
    manifest_bytes = _json_bytes(manifest)
    return Image(
        manifest_bytes,
        MEDIA_TYPES[media]["manifest"],
        sha256_digest(manifest_bytes),
        blobs=[config_blob, *blobs],
        platform=platform,
    )


def build_index(images: list[Image], media: Media = "oci") -> Image:
    """A multi-platform index (OCI) or manifest list (Docker) over single-platform `images`."""
    if not images:
        raise ValueError("an index needs at least one image")
    entries = []
    for img in images:
        if img.is_index or img.platform is None:
            raise ValueError("index entries must be single-platform images built by build_image")
        entries.append(
            {
                "mediaType": img.media_type,
                "digest": img.digest,
                "size": img.size,
                "platform": parse_platform(img.platform),
            }
        )
    index = {"schemaVersion": 2, "mediaType": MEDIA_TYPES[media]["index"], "manifests": entries}
    data = _json_bytes(index)
    return Image(data, MEDIA_TYPES[media]["index"], sha256_digest(data), children=list(images))


# -- push --------------------------------------------------------------------------------------
class RegistryPushError(RuntimeError):
    def __init__(self, step: str, response: httpx.Response):
        super().__init__(
            f"{step}: HTTP {response.status_code} from {response.request.url}: {response.text[:500]}"
        )
        self.status_code = response.status_code


@dataclass
class PushStats:
    """What a push did; callers that care (seeding, tests) pass one in."""

    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)
    uploaded_bytes: int = 0


_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryChallengeAuth(httpx.Auth):
    """Answers a registry's 401 challenge: Bearer (token service, RFC 6750 style) or Basic.

    Tokens are asked for `repository:<repo>:pull,push` up front, so one token covers the whole push.
    Only requests with an in-memory body are replayed after a 401; blob uploads come after the
    (bodiless) POST, which has already earned the token.
    """

    def __init__(self, repository: str, credentials: tuple[str, str] | None, actions: str = "pull,push"):
        self.repository = repository
        self.credentials = credentials
        self.actions = actions
        self._header: str | None = None

    def auth_flow(self, request: httpx.Request):  # type: ignore[override]
        if self._header:
            request.headers["Authorization"] = self._header
        response = yield request
        if response.status_code != 401 or not isinstance(request.stream, httpx.ByteStream):
            return
        header = self._answer(response.headers.get("WWW-Authenticate", ""))
        if header is None or header == self._header:
            return
        self._header = header
        request.headers["Authorization"] = header
        yield request

    def _basic(self) -> str | None:
        if not self.credentials:
            return None
        raw = f"{self.credentials[0]}:{self.credentials[1]}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _answer(self, challenge: str) -> str | None:
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            return self._basic()
        if scheme != "bearer":
            return None
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        if "realm" not in params:
            return None
        scopes = [f"repository:{self.repository}:{self.actions}"]
        if params.get("scope") and params["scope"] not in scopes:
            scopes.append(params["scope"])
        query: list[tuple[str, str]] = [("service", params.get("service", ""))] + [
            ("scope", s) for s in scopes
        ]
        headers = {"Authorization": b} if (b := self._basic()) else {}
        r = httpx.get(params["realm"], params=query, headers=headers, timeout=30)
        if r.status_code != 200:
            raise RegistryPushError("token request", r)
        body = r.json()
        token = body.get("token") or body.get("access_token")
        return f"Bearer {token}" if token else None


class RegistryPusher:
    """Pushes images to one repository of a Registry v2 server."""

    def __init__(
        self,
        registry_url: str,
        repository: str,
        auth: tuple[str, str] | None = None,
        stats: PushStats | None = None,
        timeout: float = 300.0,
    ):
        self.repository = repository
        self.stats = stats if stats is not None else PushStats()
        self.client = httpx.Client(
            base_url=registry_url.rstrip("/"),
            auth=RegistryChallengeAuth(repository, auth),
            timeout=httpx.Timeout(timeout, connect=10.0),
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> RegistryPusher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def push(self, image: Image, tag: str) -> str:
        if image.is_index:
            for child in image.children:
                self._push_manifest(child, child.digest)
        self._push_manifest(image, tag)
        return image.digest

    def _push_manifest(self, image: Image, reference: str) -> None:
        for blob in image.blobs:
            self.ensure_blob(blob)
        r = self.client.put(
            f"/v2/{self.repository}/manifests/{reference}",
            content=image.manifest,
            headers={"Content-Type": image.media_type},
        )
        if r.status_code != 201:
            raise RegistryPushError(f"PUT manifest {reference}", r)
        served = r.headers.get("Docker-Content-Digest")
        if served and served != image.digest:
            raise RuntimeError(
                f"registry computed {served} for manifest {reference}, expected {image.digest}"
            )
        self.stats.manifests.append(image.digest)

    def ensure_blob(self, blob: Blob) -> None:
        base = f"/v2/{self.repository}/blobs"
        r = self.client.head(f"{base}/{blob.digest}")
        if r.status_code == 200:
            self.stats.skipped.append(blob.digest)
            return
        r = self.client.post(f"{base}/uploads/")
        if r.status_code != 202 or "Location" not in r.headers:
            raise RegistryPushError("start upload", r)
        location = self.client.base_url.join(r.headers["Location"]).copy_merge_params({"digest": blob.digest})
        content: bytes | Iterator[bytes] = blob.data if blob.data is not None else blob.chunks()
        r = self.client.put(
            location,
            content=content,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)},
        )
        if r.status_code != 201:
            raise RegistryPushError(f"upload {blob.digest}", r)
        self.stats.uploaded.append(blob.digest)
        self.stats.uploaded_bytes += blob.size


def push(
    image: Image,
    registry_url: str,
    repository: str,
    tag: str,
    auth: tuple[str, str] | None = None,
    *,
    stats: PushStats | None = None,
) -> str:
    """Push `image` (and an index's children, by digest first) and tag it; returns the manifest digest."""
    with RegistryPusher(registry_url, repository, auth, stats) as pusher:
        return pusher.push(image, tag)


# -- the lab's seed set ------------------------------------------------------------------------
_OS_RELEASE = b'PRETTY_NAME="Lab Linux 1.0"\nNAME="Lab Linux"\nID=lab\nVERSION_ID="1.0"\n'
_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
_GROUP = b"root:x:0:\nnogroup:x:65534:\n"
_SH = b"#!/bin/sh\n# lab stand-in: this image is pulled and unpacked, never run\nexit 0\n"


def _base_files(name: str) -> dict[str, bytes]:
    return {
        "etc/os-release": _OS_RELEASE,
        "etc/passwd": _PASSWD,
        "etc/group": _GROUP,
        "etc/hostname": name.encode() + b"\n",
        "bin/sh": _SH,
    }


def _nginx(platform: str, media: Media) -> Image:
    conf = (
        b"user nginx;\nworker_processes auto;\nevents { worker_connections 1024; }\n"
        b"http {\n  server {\n    listen 80;\n    location / { root /usr/share/nginx/html; index index.html; "
        b"}\n  }\n}\n"
    )
    html = (
        b"<!DOCTYPE html>\n<html><head><title>Welcome to nginx (lab)</title></head>\n"
        b"<body><h1>lab</h1></body></html>\n"
    )
    return build_image(
        _base_files("nginx"),
        [
            {
                "etc/nginx/nginx.conf": conf,
                "usr/share/nginx/html/index.html": html,
                "usr/sbin/nginx": _SH,
                "docker-entrypoint.sh": _SH,
            },
        ],
        platform=platform,
        media=media,
        container_config={
            "Cmd": ["nginx", "-g", "daemon off;"],
            "Entrypoint": ["/docker-entrypoint.sh"],
            "ExposedPorts": {"80/tcp": {}},
            "StopSignal": "SIGQUIT",
        },
    )


def _busybox(platform: str, media: Media) -> Image:
    return build_image(
        {**_base_files("busybox"), "bin/busybox": _SH},
        platform=platform,
        media=media,
        container_config={"Cmd": ["sh"]},
    )


def _small(
    name: str, extra: dict[str, bytes], cmd: list[str], platform: str = "linux/amd64", media: Media = "oci"
) -> Image:
    return build_image(
        _base_files(name.replace("/", "-")),
        [extra],
        platform=platform,
        media=media,
        container_config={"Cmd": cmd},
    )


def _split_mib(total_mb: int, parts: int) -> list[int]:
    total = max(total_mb, 1) << 20
    sizes = [total // parts] * parts
    sizes[-1] += total - sum(sizes)
    return sizes


def lab_image_builders(
    workdir: Path, image_mb: int = 50, multilayer_mb: int = 40
) -> dict[str, Callable[[], Image]]:
    """The seed set: 'registry-host/repo:tag' -> a function building that image (built only when needed).

    Random layers are seeded, so the set is the same on every run for the same sizes.
    """

    def demo() -> Image:
        return build_index(
            [
                build_image(
                    {"hello.txt": b"hello from the lab (amd64)\n"},
                    [{"etc/demo.conf": b"answer=42\n"}],
                    platform="linux/amd64",
                ),
                build_image(
                    {"hello.txt": b"hello from the lab (arm64)\n"},
                    [{"etc/demo.conf": b"answer=42\n"}],
                    platform="linux/arm64/v8",
                ),
            ]
        )

    def big() -> Image:
        return build_image(
            {"etc/big.conf": b"size_mb=%d\n" % image_mb},
            workdir=workdir,
            random_layer_bytes=[max(image_mb, 1) << 20],
            seed="library/big:lab",
        )

    def layers() -> Image:
        return build_image(
            {"etc/layers.conf": b"total_mb=%d\n" % multilayer_mb},
            workdir=workdir,
            random_layer_bytes=_split_mib(multilayer_mb, 4),
            seed="library/layers:lab",
        )

    return {
        "docker.io/library/demo:1": demo,
        "docker.io/library/big:lab": big,
        "docker.io/library/layers:lab": layers,
        "docker.io/library/nginx:lab": lambda: build_index(
            [_nginx("linux/amd64", "oci"), _nginx("linux/arm64/v8", "oci")]
        ),
        "docker.io/library/busybox:lab": lambda: _busybox("linux/amd64", "docker"),
        "docker.io/ratelimitpreview/test:latest": lambda: _small(
            "ratelimitpreview/test", {"test.txt": b"rate limit preview\n"}, ["cat", "/test.txt"]
        ),
        "quay.io/lab/tool:1": lambda: _small(
            "tool", {"usr/local/bin/tool": _SH, "etc/tool.yaml": b"level: info\n"}, ["tool", "--version"]
        ),
        "ghcr.io/lab/app:1": lambda: _small(
            "app", {"app/app.py": b"print('lab app')\n", "app/VERSION": b"1\n"}, ["python3", "/app/app.py"]
        ),
        "gcr.io/lab/pause:3.9": lambda: _small("pause", {"pause": _SH}, ["/pause"]),
        "registry.k8s.io/pause:3.9": lambda: _small("pause", {"pause": _SH}, ["/pause"]),
    }


def split_ref(ref: str) -> tuple[str, str, str]:
    """'docker.io/library/demo:1' -> ('docker.io', 'library/demo', '1')"""
    host, rest = ref.split("/", 1)
    repo, tag = rest.rsplit(":", 1)
    return host, repo, tag


def seed_lab_images(
    registry_urls: dict[str, str],
    workdir: Path,
    image_mb: int = 50,
    multilayer_mb: int = 40,
    *,
    stats: PushStats | None = None,
) -> dict[str, str]:
    """Push the lab seed set to the upstream registries present in `registry_urls` (host -> URL).

    Returns 'host/repo:tag' -> manifest digest. Idempotent: blobs the registry has are skipped,
    and the random layers are seeded, so a second run uploads nothing new.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    pushed: dict[str, str] = {}
    for ref, build in lab_image_builders(workdir, image_mb, multilayer_mb).items():
        host, repo, tag = split_ref(ref)
        url = registry_urls.get(host)
        if url is not None:
            pushed[ref] = push(build(), url, repo, tag, stats=stats)
    (workdir / "seeded.json").write_text(json.dumps(pushed, indent=1, sort_keys=True))
    return pushed
