"""The seed's original node configuration (issue #6), kept to teach what the generated userData does instead.

The seed injected this bash into a Karpenter v0.31 ``AWSNodeTemplate`` and then rolled the nodes. The Basic
value is a placeholder here; in the seed it was a real credential.
"""

from __future__ import annotations

SEED_AWSNODETEMPLATE = """\
apiVersion: karpenter.k8s.aws/v1alpha1
kind: AWSNodeTemplate
metadata:
  name: default
spec:
  subnetSelector:
    karpenter.sh/discovery: my-cluster
  securityGroupSelector:
    karpenter.sh/discovery: my-cluster
  userData: |
    #!/bin/bash
    mkdir -p /etc/containerd/certs.d/docker.io
    cat <<EOF | tee -a /etc/containerd/certs.d/docker.io/hosts.toml
    server = "https://registry-1.docker.io"

    [host."https://nexus.example.com:8082"]
      capabilities = ["pull", "resolve"]
      [host."https://nexus.example.com:8082".header]
        authorization = "Basic <base64 of docker-pull:password>"
    EOF
"""

# (what the seed did, what goes wrong, what the runbook does instead, source)
DIFFERENCES: list[tuple[str, str, str, str]] = [
    (
        "`tee -a` appends to hosts.toml",
        "a second run (cloud-init rerun, AMI with a baked file, a retry) duplicates the [host] table: "
        "containerd "
        "logs `failed to decode hosts.toml` and pulls that registry from Docker Hub",
        "each file is written whole to a temp file in the same folder and renamed over the old one; a rerun "
        "leaves "
        "identical bytes",
        "containerd logs 'failed to parse TOML: duplicated tables' and ignores the file (seen with 1.6.20)",
    ),
    (
        "docker.io only",
        "gcr.io, quay.io, ghcr.io, registry.k8s.io ... still pull across the internet",
        "one hosts.toml per upstream, each pointing at that upstream's own Nexus endpoint (Nexus ignores "
        "?ns=)",
        "stage 1; containerd docs/hosts.md",
    ),
    (
        'static `authorization = "Basic ..."` in userData',
        "the password is readable through IMDS and ec2:DescribeInstanceAttribute; rotating it changes "
        "userData and "
        "drifts every node; lower-case key may send two Authorization headers",
        "anonymous pulls (recommended), or the secret fetched at boot from Secrets Manager with the node "
        "role; the "
        "static header stays possible but is flagged, and its key is written `Authorization`",
        "containerd docs/hosts.md, pkg/cri/server/image_pull.go; EC2 user data is readable through IMDS",
    ),
    (
        "no check that the mirror is up at boot",
        "a node booting while Nexus is down still tries the mirror first on every pull (a black-holed "
        "endpoint "
        "costs up to the 30 s dial timeout each time)",
        "every hosts.toml written anyway (containerd falls back to the upstream per pull and uses the "
        "mirror once it is back; a probe gate would bypass it for the node's life); dial_timeout where the "
        "node's containerd reads it (>= 2.0.7, from containerd --version at boot); the boot probe only logs",
        "containerd docs/hosts.md dial_timeout; containerd/containerd#10660, #11106, #12136",
    ),
    (
        "bare script in a v0.31 AWSNodeTemplate",
        "one AMI family (AL2) and one Karpenter API; AL2023 needs MIME, Bottlerocket needs TOML settings",
        "AL2/AL2023: our own MIME part beside the user's parts (NodeConfig untouched); Bottlerocket: "
        "settings.container-registry in the one form the version supports; AWSNodeTemplate, EC2NodeClass "
        "v1beta1 and v1",
        "aws/karpenter-provider-aws pkg/providers/amifamily/bootstrap/",
    ),
    (
        "userData replaced by hand",
        "the user's own userData content is lost or duplicated on the next edit",
        "our part sits between markers and is replaced in place; everything else is kept byte for byte, and "
        "the "
        "result is validated against the CRD before it is applied",
        "aws/karpenter-provider-aws bootstrap/mime/mime.go, eksbootstrap.go",
    ),
    (
        "nodes rolled by hand",
        "no pacing, no check that every node actually carries the new userData",
        "drift (always on in v1), paced by NodePool disruption budgets, watched until no old NodeClaim is "
        "left",
        "Karpenter docs concepts/disruption.md; pkg/cloudprovider/drift.go",
    ),
]


def differences_table():
    from runbook_lib.display import table

    return table(DIFFERENCES, ["the seed", "what goes wrong", "what the runbook does", "source"])
