"""Content of docker hosted repositories, kept beside the connector half's proxy caches.

The emulator takes no pushes (the registry upload protocol is not emulated): the lab stores an image into
a hosted repository directly (`store_image`), and the connector serves it as Nexus serves a hosted
repository's content, by tag or digest, after the same authorization as any docker read.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import quote

from runbook_lab.images import Image
from runbook_lab.nexus.dockercache import CachedBlob, Manifest

HOSTED_DIR = ".hosted"  # never a repository name: those start with a letter or a digit


def _root(cache_dir: Path, repo: str) -> Path:
    return Path(cache_dir) / HOSTED_DIR / repo


def _image_dir(cache_dir: Path, repo: str, name: str) -> Path:
    return _root(cache_dir, repo) / quote(name, safe="")


def _hex(digest: str) -> str:
    algo, _, value = digest.partition(":")
    if algo != "sha256" or not value.isalnum():
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return value


def store_image(cache_dir: Path, repo: str, name: str, tag: str, image: Image) -> None:
    """Put a single-platform image into hosted repository `repo` as `name:tag`."""
    if image.is_index:
        raise ValueError("store one platform's image, not an index")
    base = _image_dir(cache_dir, repo, name)
    for sub in ("blobs", "manifests", "tags"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for blob in image.all_blobs():
        (base / "blobs" / _hex(blob.digest)).write_bytes(blob.read())
    (base / "manifests" / _hex(image.digest)).write_bytes(image.manifest)
    (base / "manifests" / f"{_hex(image.digest)}.type").write_text(image.media_type)
    (base / "tags" / tag).write_text(image.digest)


def manifest(cache_dir: Path, repo: str, name: str, ref: str) -> Manifest | None:
    base = _image_dir(cache_dir, repo, name)
    if ref.startswith("sha256:"):
        digest = ref
    else:
        tag = base / "tags" / ref
        if "/" in ref or not tag.is_file():
            return None
        digest = tag.read_text().strip()
    body = base / "manifests" / _hex(digest)
    if not body.is_file():
        return None
    media_type = (base / "manifests" / f"{_hex(digest)}.type").read_text().strip()
    return Manifest(digest, media_type, body.read_bytes(), cache_hit=True)


def blob(cache_dir: Path, repo: str, name: str, digest: str) -> CachedBlob | None:
    path = _image_dir(cache_dir, repo, name) / "blobs" / _hex(digest)
    return CachedBlob(path, digest) if path.is_file() else None


def forget(cache_dir: Path, keep: set[str]) -> None:
    """Nexus deletes a repository's content with the repository: drop every hosted store not in `keep`."""
    root = Path(cache_dir) / HOSTED_DIR
    if not root.is_dir():
        return
    for entry in root.iterdir():
        if entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True)
