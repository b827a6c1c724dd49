"""Stage 4: Karpenter node userData that points each node's containerd at the Nexus mirrors.

Modules, in the order the stage uses them:
- ``mirrors``: one ``NodeMirror`` per upstream (registry, upstream server, mirror endpoint) and its
hosts.toml;
- ``credentials``: how a node authenticates to the mirror (anonymous, static header, Secrets Manager at boot);
- ``userdata``: the AL2/AL2023 boot script (atomic writes, boot probe, root override) and the MIME merge;
- ``mime``: a byte-preserving multipart/mixed splitter (the user's parts are never rewritten);
- ``bottlerocket``: the ``settings.container-registry`` TOML block and its merge;
- ``nodeclass``: read, merge, diff, validate (vendored CRDs in ``crds/``) and patch node classes;
- ``rollout``: drift per Karpenter version, disruption budgets, forced roll, the rollout watcher;
- ``nodes``: the stage's steps the notebook calls (render, plan, node preflight, roll).

Each module cites the public sources it relies on (aws/karpenter-provider-aws, kubernetes-sigs/karpenter,
awslabs/amazon-eks-ami, bottlerocket-os/bottlerocket, containerd docs/hosts.md).
"""
