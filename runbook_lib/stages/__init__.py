"""The six stages, each with the same small API that its notebook calls in the same order.

    state = <stage>.read(ctx)                 # what is there now (reads only)
    plan = <stage>.plan(ctx, state)           # what would change (a Plan; nothing written)
    <stage>.show(ctx, state, plan)            # the plan, recorded and shown
    result = <stage>.apply(ctx, state, plan)  # writes only in apply mode, then confirms no drift
    checks = <stage>.checks(ctx, state, plan) # what holds afterwards, recorded and returned
    <stage>.enforce(ctx, checks)              # fails the stage when a check failed

Modules are named for the stage ids (``nexus-repos`` is ``nexus_repos``). ``state`` is the stage's own
record of what it read and, for long stages, of what it measured along the way; a notebook may call
the stage's narrative helpers between the six steps (a rollout to watch, pulls to time), never instead
of them.
"""

MODULES = {
    "preflight": "preflight",
    "nexus-repos": "nexus_repos",
    "nexus-security": "nexus_security",
    "helm": "helm",
    "karpenter": "karpenter",
    "verify": "verify",
}
STEPS = ("read", "plan", "show", "apply", "checks", "enforce")
