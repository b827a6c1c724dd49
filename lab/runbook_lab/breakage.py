"""`runbook lab break <fault>` / `runbook lab fix <fault>`: faults that happen in real clusters, put into the
running lab the way a person would put them there (the Nexus REST API, the Kubernetes API, stopping the
Nexus process), each caught by the runbook stage named in ``FAULTS``.

What a break changed is recorded under the lab folder (``DIR/breakage/<fault>.json``), so ``fix`` works
after a lab restart; fixing a fault that is not broken is a no-op that says so. The lab never calls the
runbook's product code to build a broken state: the documents below are what a person would type.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    name: str
    description: str  # what `break` does, as a person would do it in a real cluster
    stage: str  # the runbook stage (plan mode) that catches it
    message: str  # a substring of what that stage prints when it catches it
    why: str = ""  # why that stage, when it is not the obvious one


# The contract the course codes against: name, what break does, the stage that catches it, what the learner
# sees (a substring of the stage's failure).
FAULTS: tuple[Fault, ...] = (
    Fault(
        "tee-append",
        "EC2NodeClass userData replaced by the manual `tee -a` version that appends hosts.toml "
        "(written twice: duplicate [host] tables, containerd ignores the file)",
        "karpenter",
        "appends to /etc/containerd/certs.d/",
    ),
    Fault(
        "single-endpoint",
        "one endpoint for all upstreams relying on containerd's ?ns= (the per-upstream connectors "
        "removed, every proxy a member of the docker group)",
        "nexus-repos",
        "?ns=",
    ),
    Fault(
        "token-realm-off",
        "Docker Bearer Token realm removed from the active realms",
        "nexus-security",
        "DockerToken",
    ),
    Fault(
        "anonymous-off",
        "anonymous access disabled while nodes pull anonymously",
        "nexus-security",
        "anonymous access is disabled",
    ),
    Fault(
        "nexus-down-at-boot",
        "Nexus stopped, a node boots meanwhile",
        "preflight",
        "required endpoint(s) not usable: nexus",
    ),
    Fault(
        "wrong-node-password",
        "the pull password nodes use no longer matches Nexus (changed in Nexus, not on the nodes)",
        "verify",
        "bypassed the mirror",
    ),
    Fault(
        "wrong-remote-url",
        "an upstream proxy's remote URL changed to a wrong one",
        "nexus-repos",
        "remote URL",
    ),
)
BY_NAME = {f.name: f for f in FAULTS}
