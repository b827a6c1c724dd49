"""A parameters file for runner tests that never reach anything: every endpoint is 127.0.0.1:9 (discard)."""

from __future__ import annotations


def offline_params_yaml(
    target: str, password_env: str, pull_password: str | None = None, outputs_dir: str = "runs"
) -> str:
    """Valid parameters naming `target`, the admin password an `env:` reference to `password_env`; with
    `pull_password` (a secret reference), a pull user `docker-pull` with that password."""
    security = f"security:\n  user: docker-pull\n  pull_password: {pull_password}\n" if pull_password else ""
    return f"""\
target: {target}
nexus:
  url: http://127.0.0.1:9
  admin_user: admin
  admin_password: env:{password_env}
upstreams:
  - name: docker-hub
    registry: docker.io
    remote_url: http://127.0.0.1:9
{security}kubernetes:
  required: false
aws:
  required: false
outputs:
  dir: {outputs_dir}
"""
