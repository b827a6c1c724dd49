"""Stage 3: expose the Nexus docker connectors through the Nexus Helm chart's Service and Ingress.

- ``charts``   facts about the three charts (metadata, the docker-related default values);
- ``values``   the mirror endpoints (ingress host, connector port) and the values overlay per chart flavour;
- ``release``  the deployed release read from its Helm release Secret (or ``helm get values``);
- ``render``   the Service/Ingress objects the chart renders for given values, as ``helm template`` would;
- ``exposure`` plan and apply: ``helm upgrade --reuse-values -f overlay`` or, without helm, the rendered
               objects applied directly with Helm's ownership metadata so a later upgrade adopts them;
- ``verify``   the objects exist as rendered and every endpoint answers ``/v2/`` through its ingress host.
"""
