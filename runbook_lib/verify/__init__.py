"""Stage 5, verification: did the mirror fix the problem, and by how much.

- ``endpoints``: where a direct pull and a mirror pull go for an upstream, and with which credentials;
- ``hostpull``: pull-time comparison from the runbook host (direct, mirror cold, mirror warm);
- ``nodepull``: the same comparison on the nodes of each NodePool, read from the kubelet's events;
- ``mirrorproof``: the Nexus side — components in the proxy repositories and request counters;
- ``ratelimit``: Docker Hub headroom and the 429 demonstration;
- ``report``: the run's figures (medians, speed-ups, bypasses, Community Edition usage forecast);
- ``history``, ``charts``, ``thresholds``: trend store, figures, and the checks that fail the stage.
"""
