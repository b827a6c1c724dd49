"""A parameters file for runner tests that never reach anything: every endpoint is 127.0.0.1:9 (discard)."""

from __future__ import annotations


def offline_params_yaml(target: str, password_env: str) -> str:
    """Valid parameters naming `target`, the admin password an `env:` reference to `password_env`."""
    return f"""\
target: {target}
nexus:
  url: http://127.0.0.1:9
  admin_password: env:{password_env}
upstreams:
  - name: docker-hub
    registry: docker.io
    remote_url: http://127.0.0.1:9
kubernetes:
  required: false
aws:
  required: false
outputs:
  dir: runs
"""
