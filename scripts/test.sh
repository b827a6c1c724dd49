#!/usr/bin/env bash
# Lint, then the whole suite. As root the suite runs inside a private network namespace with only
# loopback: real containerd can never fall back to the internet there, and lab ports cannot collide
# with anything else on the machine.
set -eu
cd "$(dirname "$0")/.."
.venv/bin/ruff check runbook_lib lab tests bench
.venv/bin/ruff format --check runbook_lib lab tests bench
if [ "$(id -u)" = 0 ] && command -v buildah >/dev/null && command -v mmdebstrap >/dev/null; then
  # The container image test runs inside the private network namespace below, where no Debian mirror or
  # package index is reachable: fetch its base tarball and wheelhouse first (cached in .cache/container).
  .venv/bin/python -c 'from tests.integration import test_container_image as t; t.base_tarball(); t.wheelhouse()' \
    || echo "note: could not prefetch the container image test's base or wheels; that test will skip and say why"
fi
if [ "$(id -u)" = 0 ] && unshare --net true 2>/dev/null; then
  exec unshare --net -- sh -c 'ip link set lo up && exec .venv/bin/python -m pytest "$@"' pytest "$@"
fi
echo "note: not root or no unshare: running outside a private network namespace; netns tests will skip"
exec .venv/bin/python -m pytest "$@"
