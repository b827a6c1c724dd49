#!/usr/bin/env bash
# Debian packages the lab and the tests use. As root: installed when missing (non-interactive,
# idempotent). Otherwise: say what is missing; tests that need them skip and say why.
set -u
# buildah and mmdebstrap: the Containerfile test builds the image from a Debian base (tests/integration/
# test_container_image.py)
PACKAGES=(docker-registry containerd iproute2 util-linux skopeo chromium buildah mmdebstrap)
declare -A PROVIDES=([docker-registry]=docker-registry [containerd]=containerd [iproute2]=ip [util-linux]=unshare [skopeo]=skopeo [chromium]=chromium [buildah]=buildah [mmdebstrap]=mmdebstrap)
missing=()
for pkg in "${PACKAGES[@]}"; do
  command -v "${PROVIDES[$pkg]}" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "note: not root, so these Debian packages are not installed: ${missing[*]}"
  echo "      (run as root, or: sudo apt-get install -y ${missing[*]}); tests that need them will skip"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: ${missing[*]} missing and apt-get is not available on this system" >&2
  exit 1
fi
echo "+ apt-get install ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
for attempt in 1 2 3; do
  if apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/eks-mirror-apt.log 2>&1; then
    exit 0
  fi
  echo "  apt-get failed (attempt $attempt); retrying in 10 s"; tail -3 /tmp/eks-mirror-apt.log; sleep 10
done
echo "error: could not install ${missing[*]} (see /tmp/eks-mirror-apt.log)" >&2
exit 1
