"""AL2 / AL2023 node userData: a boot script that writes containerd's hosts.toml files, in its own MIME part.

The script (``boot_script``) needs only bash, coreutils and curl (plus the AWS CLI in the secrets-manager
mode; EKS AMIs ship it). What it does, and why (containerd docs/hosts.md, Karpenter, EKS AMIs):
- each file is written whole: ``mktemp`` in the target folder, then ``mv`` over the old file. Never
  appended (``tee -a``): a second run would duplicate a ``[host]`` table, and containerd then does not use
  the file: it logs ``failed to decode hosts.toml`` (duplicated tables) and pulls from the upstream
  (loadHostDir, remotes/docker/config/hosts.go). A rerun leaves byte-identical files;
- every hosts.toml is always written, whether or not its mirror answers at boot: containerd reads the
  files on every pull (hosts.toml is loaded per resolve, not cached), so a node that boots during a Nexus
  restart uses the mirror as soon as it is back, without being replaced. While the mirror is down,
  containerd moves on to the next host and finally ``server`` (the upstream) on a refused connection or an
  error answer, at no cost; only a black-holed endpoint costs its dial timeout, per request (30 s by
  default, containerd/containerd#10660). A probe gate (no file for a mirror that does not answer) would
  instead bypass the mirror for the node's whole life: up to Karpenter's ``expireAfter``, 720 h;
- ``dial_timeout`` bounds that cost. containerd reads the key from 2.0.7 (backport
  containerd/containerd#12136) and 2.1.0 (containerd/containerd#11106; core/remotes/docker/config/hosts.go
  ``hostFileConfig.DialTimeout``); 1.6/1.7 (go-toml v1) and 2.0.0-2.0.6 (go-toml v2) decode hosts.toml
  non-strictly and ignore the key (checked with the real containerd 1.6.20 in
  tests/integration/test_node_boot_mirror_down.py). The script decides on
  the node, from ``containerd --version``, because the AMI decides which containerd runs (AL2023 ships
  2.x): below 2.0.7 the line is dropped; a version it cannot read is taken as 2.x (the key is harmless
  where it is not read). ``karpenter.dial_timeout`` is the value;
- optional boot probe (``karpenter.probe_mirror_at_boot``), for the log only: ``curl`` asks every mirror's
  ``/v2/`` at once, in the background, with a short ``--max-time``; a mirror that gives no registry
  answer (200, or 401 = a registry asking for a token) is logged, and its file is written all the same.
  The probes run in parallel, so the boot waits at most one ``probe_timeout_s``;
- a hosts.toml that holds the pull credential (an ``Authorization`` header, static or read from Secrets
  Manager at boot) is written ``0600``: only root (containerd) reads it, where a ``0644`` file would hand
  the Nexus pull password to every local user and container that can read the host's /etc. Files without
  a credential, and the CA bundle, are ``0644``. ``mktemp`` creates the temp file ``0600``, so the
  credential is never readable by others, not even before the ``chmod``. (Bottlerocket: the credential
  goes into its settings API, which renders containerd's files itself; see bottlerocket.py.);
- ``EKS_MIRROR_ROOT=/dir`` writes below ``/dir`` instead of ``/`` (tests and lab nodes run it unprivileged);
- AL2 only: ``bootstrap.sh`` copies ``/etc/eks/containerd/containerd-config.toml`` over
  ``/etc/containerd/config.toml``, so ``config.toml`` itself is never edited. AMIs from v20221222 set
  ``config_path`` there; on an older AMI the script adds the CRI registry table with ``config_path`` to
  that source file once (a rerun finds it and writes nothing). A registry table without ``config_path``
  is left alone: it may hold legacy ``mirrors``, and ``mirrors`` beside ``config_path`` breaks CRI.
  AL2023: nodeadm writes config.toml with ``config_path`` before cloud-init runs our part; nothing to do.
- the script always exits 0: a mirror problem must never stop a node from joining (it pulls upstream).

Karpenter puts user parts before its own bootstrap part (AL2) or NodeConfig (AL2023 v1), and cloud-init
runs shell parts in order, so the files exist before kubelet's first pull
(pkg/providers/amifamily/bootstrap/eksbootstrap.go, nodeadm.go).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

import yaml

from runbook_lib.containerd.hosts import HostsToml
from runbook_lib.karpenter import credentials, mime
from runbook_lib.karpenter.credentials import AUTH_PLACEHOLDER
from runbook_lib.karpenter.mirrors import CA_NODE_PATH, NodeMirror
from runbook_lib.params import RunbookParams

ROOT_ENV = "EKS_MIRROR_ROOT"
MARKER_HEADER = "X-Eks-Mirror-Runbook"
MARKER_VALUE = "containerd-mirrors"
BEGIN = "# >>> eks-mirror-runbook: containerd registry mirrors (managed part, replaced on every apply) >>>"
END = "# <<< eks-mirror-runbook <<<"
EOF_WORD = "EKS_MIRROR_EOF"
CERTS_DIR = "etc/containerd/certs.d"
EKS_AL2_CONTAINERD_CONFIG = "etc/eks/containerd/containerd-config.toml"

# EC2: "User data is limited to 16 KB, in raw form, before it is base64-encoded" (Amazon EC2 User Guide,
# "Work with instance user data",
# docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-add-user-data.html).
USERDATA_LIMIT = 16 * 1024
# Karpenter appends its own part to ours (AL2: the bootstrap.sh call with the base64 cluster CA and kubelet
# flags; AL2023: a NodeConfig with the same CA), and it counts against the same limit. An estimate: a
# cluster CA is ~1.5 KB in base64, labels/taints/kubelet settings vary.
KARPENTER_RESERVE = 4 * 1024


class UserDataError(ValueError):
    pass


@dataclass(frozen=True)
class ScriptInputs:
    mirrors: list[NodeMirror]
    files: list[HostsToml]
    ami_family: str
    probe: bool
    probe_timeout_s: int
    ca_pem: str | None = None
    skip_verify: bool = False
    secret_id: str | None = None  # secrets-manager mode
    region: str | None = None
    dial_timeout: str | None = None  # the value; whether to write it, the node decides


def inputs(
    params: RunbookParams, files: list[HostsToml], mirrors: list[NodeMirror], ca_pem: str | None
) -> ScriptInputs:
    k = params.karpenter
    return ScriptInputs(
        mirrors,
        files,
        k.ami_family,
        k.probe_mirror_at_boot,
        k.probe_timeout_s,
        ca_pem,
        k.mirror_skip_verify,
        credentials.node_secret_id(params),  # the next secret during a rotation
        params.aws.region,
        k.dial_timeout,
    )


def _q(value: str) -> str:
    return shlex.quote(value)


def _heredoc(text: str) -> str:
    if any(line == EOF_WORD for line in text.splitlines()):
        raise UserDataError(f"content contains the heredoc terminator {EOF_WORD}")
    if not text.isascii():
        raise UserDataError("userData content must be ASCII (the part is us-ascii)")
    return f"<<'{EOF_WORD}'\n{text}{'' if text.endswith(chr(10)) else chr(10)}{EOF_WORD}"


_PRELUDE = r"""set -u
umask 022
root="${%(root)s:-}"
certs="$root/%(certs)s"
written=0
log() { printf 'eks-mirror: %%s\n' "$*" >&2; }

# install_file DEST MODE: stdin becomes DEST, via a temp file in DEST's folder and a rename (atomic).
install_file() {
  local dest="$1" dir tmp
  dir=$(dirname "$dest")
  mkdir -p "$dir" || return 1
  tmp=$(mktemp "$dir/.eks-mirror.XXXXXX") || return 1
  if cat > "$tmp" && chmod "$2" "$tmp" && mv -f "$tmp" "$dest"; then
    return 0
  fi
  rm -f "$tmp"
  return 1
}
"""

_PROBE = r"""
# mirror_up URL: does a registry answer at URL (.../v2/) within %(timeout)s s? 200 or 401 (token wanted) = yes.
# For the log only: the file is written either way (containerd falls back per request while it is down).
mirror_up() {
  local code
  if ! command -v curl >/dev/null 2>&1; then
    log "curl not found: $1 not probed"
    return 0
  fi
  code=$(curl -s -o /dev/null -w '%%{http_code}' --connect-timeout %(timeout)s --max-time %(timeout)s %(tls)s"$1") || code=000
  case "$code" in
    200|401) return 0 ;;
  esac
  log "no registry answer from $1 (HTTP ${code}, 000 = none within %(timeout)s s): hosts.toml written anyway; containerd pulls from the upstream until the mirror answers"
  return 1
}
"""

_CONTAINERD = r"""
# dial_timeout: read by containerd from 2.0.7 / 2.1.0, ignored by older ones. Decided from this node's
# containerd binary (the AMI chooses it), not from a parameter. Unreadable version: taken as 2.x.
dial_line='dial_timeout = "%(dial)s"'
nl=$'\n'
keep_dial=1
ctd_text=$(containerd --version 2>/dev/null) || ctd_text=""
ctd_re='[[:space:]]v?([0-9]+)\.([0-9]+)\.([0-9]+)'
if [[ $ctd_text =~ $ctd_re ]]; then
  ctd_major=$((10#${BASH_REMATCH[1]})) ctd_minor=$((10#${BASH_REMATCH[2]})) ctd_patch=$((10#${BASH_REMATCH[3]}))
  ctd_version="$ctd_major.$ctd_minor.$ctd_patch"
  if (( ctd_major < 2 || (ctd_major == 2 && ctd_minor == 0 && ctd_patch < 7) )); then
    keep_dial=0
    log "containerd $ctd_version reads no dial_timeout (2.0.7 / 2.1.0 and later do): not written"
  else
    log "containerd $ctd_version: dial_timeout %(dial)s for every mirror"
  fi
else
  log "containerd version not readable (containerd --version): taken as 2.x, dial_timeout %(dial)s written"
fi
"""

_SECRET = r"""
# The pull credentials come from Secrets Manager with the node role; userData holds only the secret id.
auth=""
if command -v aws >/dev/null 2>&1; then
  for attempt in 1 2 3; do
    if secret=$(aws secretsmanager get-secret-value --region %(region)s --secret-id %(secret)s --query SecretString --output text 2>/dev/null); then
      break
    fi
    secret=""
    [ "$attempt" = 3 ] || sleep 1
  done
  case "$secret" in
    ?*:?*) auth="Basic $(printf '%%s' "$secret" | base64 -w0)" ;;
    "") log "could not read secret %(secret_log)s with the node role: no mirror configured" ;;
    *) log "secret %(secret_log)s is not username:password: no mirror configured" ;;
  esac
  unset secret
else
  log "aws CLI not found: cannot read secret %(secret_log)s: no mirror configured"
fi

"""

# hosts.toml modes: one with a credential in it is for root (containerd) only
CREDENTIAL_MODE = "0600"
PUBLIC_MODE = "0644"


def file_mode(f: HostsToml, secret_mode: bool) -> str:
    """The mode a hosts.toml is written with: 0600 when it carries an Authorization header."""
    has_credential = secret_mode or any(k.lower() == "authorization" for m in f.mirrors for k in m.headers)
    return CREDENTIAL_MODE if has_credential else PUBLIC_MODE


_AL2_CONFIG_PATH = r"""
# AL2: bootstrap.sh copies this file over /etc/containerd/config.toml. AMIs from v20221222 set config_path
# in it; an older AMI gets the CRI registry table added once. A registry table without config_path may
# hold legacy mirrors (beside config_path they unload CRI), so it is left alone.
eks_config="$root/%(eks_config)s"
if [ -f "$eks_config" ]; then
  eks_text=$(cat "$eks_config")
  has_config_path=$'(^|\n)[[:space:]]*config_path[[:space:]]*='
  if [[ $eks_text =~ $has_config_path ]]; then
    :
  elif [[ $eks_text == *'[plugins."io.containerd.grpc.v1.cri".registry'* ]]; then
    log "$eks_config has a CRI registry table without config_path: left alone, hosts.toml files are not read"
  elif { cat "$eks_config"; printf '\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n'; } | install_file "$eks_config" 0644; then
    log "added config_path to $eks_config"
  else
    log "could not add config_path to $eks_config"
  fi
else
  log "$eks_config not found (not an EKS AL2 AMI): config_path not checked"
fi
"""


_WRITER = r"""
# write_hosts DEST MODE: the hosts.toml on stdin becomes DEST (install_file), without the dial_timeout line
# where this node's containerd does not read it%(secret_note)s.
write_hosts() {
  local content
%(secret_check)s  content=$(cat)
  [ "$keep_dial" = 1 ] || content=${content//"$nl$dial_line"/}
%(secret_fill)s  printf '%%s\n' "$content" | install_file "$1" "$2"
}
"""


def dial_line(value: str) -> str:
    """The line a hosts.toml [host] table carries for `dial_timeout = value` (tomli_w's rendering)."""
    return f'dial_timeout = "{value}"'


def boot_script(si: ScriptInputs) -> str:
    """The bash part. Deterministic: the same inputs give the same bytes (a byte change drifts every node)."""
    if len(si.mirrors) != len(si.files):
        raise UserDataError("one hosts.toml per mirror expected")
    lines = [
        "#!/bin/bash",
        BEGIN,
        "# Writes /etc/containerd/certs.d/<registry>/hosts.toml per mirrored registry (whole file: temp",
        "# file + rename, so a rerun leaves identical files), always, whether or not the mirror answers now:",
        "# containerd reads the files on every pull and falls back to the upstream while a mirror is down.",
        "# Generated by eks-mirror-runbook stage 4.",
        f"# {ROOT_ENV}=/dir writes below /dir instead of / (tests, lab nodes).",
    ]
    lines.append(_PRELUDE % {"root": ROOT_ENV, "certs": CERTS_DIR})
    tls = ""
    if si.ca_pem:
        lines.append(
            "# The CA the mirrors' certificates chain to (hosts.toml refers to it by relative path)."
        )
        lines.append(f'install_file "$root/{CA_NODE_PATH}" 0644 {_heredoc(si.ca_pem)}\n')
        tls = f'--cacert "$root/{CA_NODE_PATH}" '
    if si.skip_verify:
        tls = "-k "
    if si.probe:
        lines.append(_PROBE % {"timeout": si.probe_timeout_s, "tls": tls})
        # every mirror at once, in the background: the boot waits at most one probe timeout (see `wait`)
        lines.append(" ".join(f"mirror_up {_q(m.probe_url)} &" for m in si.mirrors) + "\n")
    if si.dial_timeout:
        lines.append(_CONTAINERD % {"dial": si.dial_timeout})
    else:
        lines.append("keep_dial=1 nl='' dial_line=''\n")
    if si.secret_id:
        lines.append(
            _SECRET
            % {
                "region": _q(si.region or "us-east-1"),
                "secret": _q(si.secret_id),
                "secret_log": re.sub(r"[^A-Za-z0-9/_+=.@:-]", "", si.secret_id),
            }
        )
    lines.append(
        _WRITER
        % (
            {
                "secret_note": ", with the Authorization value filled in (0600: a credential)",
                "secret_check": '  [ -n "$auth" ] || return 2\n',
                "secret_fill": f"  content=${{content//{AUTH_PLACEHOLDER}/$auth}}\n",
            }
            if si.secret_id
            else {"secret_note": "", "secret_check": "", "secret_fill": ""}
        )
    )
    for m, f in zip(si.mirrors, si.files, strict=True):
        dest = f'"$certs/{f.relative_path}"'
        text = f.render()
        if si.secret_id and AUTH_PLACEHOLDER not in text:
            raise UserDataError("secrets-manager mode: hosts.toml without the Authorization placeholder")
        if any(h.dial_timeout for h in f.mirrors) and (
            not si.dial_timeout or f"\n{dial_line(si.dial_timeout)}\n" not in text
        ):
            raise UserDataError(
                f"{m.registry}: hosts.toml does not carry the dial_timeout line the node drops"
            )
        mode = file_mode(f, bool(si.secret_id))
        lines.append(f"# {m.registry}: mirror {m.mirror_url}, upstream {m.server}")
        write = f"write_hosts {dest} {mode} {_heredoc(text)}"
        # `cmd <<'EOF' && ...` : the condition continues on the first line, the heredoc body follows it
        head, body = write.split("\n", 1)
        lines.append(f"{head} && written=$((written + 1))\n{body}\n")
    if si.ami_family == "AL2":
        lines.append(_AL2_CONFIG_PATH % {"eks_config": EKS_AL2_CONTAINERD_CONFIG})
    if si.probe:
        lines.append("wait  # the probes' log lines")
    lines.append(f'log "$written of {len(si.files)} hosts.toml file(s) written below $certs"')
    lines.append("exit 0")
    lines.append(END)
    return "\n".join(lines) + "\n"


# -- the MIME part and the merge ---------------------------------------------------------------------------
def _our_headers() -> dict[str, str]:
    return {"Content-Type": mime.SHELL, MARKER_HEADER: MARKER_VALUE}


def is_ours(part: mime.Part) -> bool:
    return part.headers.get(MARKER_HEADER.lower()) == MARKER_VALUE or BEGIN in part.body


def _bare_content_type(text: str, ami_family: str) -> str:
    """How Karpenter classifies a bare (non-MIME) userData: AL2 wraps it as a shell script; AL2023 treats
    text that parses as a YAML map as a NodeConfig, anything else as a shell script
    (nodeadm.go parseUserData)."""
    if ami_family == "AL2023":
        try:
            if isinstance(yaml.safe_load(text), dict):
                return mime.NODECONFIG
        except yaml.YAMLError:
            pass
    return mime.SHELL


def merge(existing: str | None, script: str, ami_family: str) -> str:
    """The node class userData with our part in it: the user's content kept byte for byte.

    - empty: a new MIME document with our part;
    - bare text (a shell script, or on AL2023 a NodeConfig): wrapped unchanged as a part of its own, as
      Karpenter would wrap it, after ours;
    - MIME: our previous part replaced in place, or ours inserted as the first part.
    """
    if ami_family not in ("AL2", "AL2023"):
        raise UserDataError(
            f"amiFamily {ami_family} has no shell userData (Bottlerocket: bottlerocket.merge)"
        )
    existing = existing or ""
    if not existing.strip():
        doc = mime.new_document()
        doc.parts.append(mime.Part.build(doc.boundary, _our_headers(), script))
        return doc.render()
    if not mime.is_mime(existing):
        doc = mime.new_document()
        doc.parts.append(mime.Part.build(doc.boundary, _our_headers(), script))
        doc.parts.append(
            mime.Part.build(
                doc.boundary, {"Content-Type": _bare_content_type(existing, ami_family)}, existing
            )
        )
        return doc.render()
    doc = mime.parse(existing)
    ours = mime.Part.build(doc.boundary, _our_headers(), script)
    positions = [i for i, p in enumerate(doc.parts) if is_ours(p)]
    if len(positions) > 1:
        raise UserDataError("the userData has more than one eks-mirror-runbook part; remove all but one")
    if positions:
        doc.parts[positions[0]] = ours
    else:
        doc.parts.insert(0, ours)
    return doc.render()


def remove(existing: str | None) -> str:
    """The userData without our part (the user's parts unchanged); used to uninstall."""
    existing = existing or ""
    if not mime.is_mime(existing):
        return existing
    doc = mime.parse(existing)
    doc.parts = [p for p in doc.parts if not is_ours(p)]
    return doc.render() if doc.parts else ""


def parts(user_data: str) -> list[dict[str, Any]]:
    """Every part of a userData (a bare text counts as one), in order, with `ours` marking our part."""
    if not user_data.strip():
        return []
    if not mime.is_mime(user_data):
        return [{"content_type": mime.SHELL, "body": user_data, "ours": BEGIN in user_data}]
    return [
        {"content_type": p.content_type, "body": p.body, "ours": is_ours(p)}
        for p in mime.parse(user_data).parts
    ]


def managed_script(user_data: str | None) -> str | None:
    """Our boot script as it stands in a userData, or None."""
    for p in parts(user_data or ""):
        if p["ours"]:
            return p["body"]
    return None


def shell_scripts(user_data: str | None) -> list[str]:
    """Every text/x-shellscript body, in the order cloud-init runs them (what a lab node executes)."""
    return [p["body"] for p in parts(user_data or "") if p["content_type"] == "text/x-shellscript"]


def size_report(user_data: str) -> dict[str, Any]:
    size = len(user_data.encode())
    budget = USERDATA_LIMIT - KARPENTER_RESERVE
    return {
        "bytes": size,
        "limit": USERDATA_LIMIT,
        "reserved_for_karpenter": KARPENTER_RESERVE,
        "budget": budget,
        "ok": size <= budget,
        "detail": f"{size} bytes of {budget} (EC2 limit {USERDATA_LIMIT} raw bytes, "
        f"{KARPENTER_RESERVE} kept for Karpenter's own part)",
    }


def check_size(user_data: str) -> dict[str, Any]:
    report = size_report(user_data)
    if not report["ok"]:
        raise UserDataError(
            f"userData too large: {report['detail']}; fewer upstreams per node class or a CA "
            "bundle baked into the AMI would shrink it"
        )
    return report
