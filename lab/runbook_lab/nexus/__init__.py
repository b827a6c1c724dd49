"""A Nexus Repository 3 stand-in for the lab: the REST API under /service/rest and docker registry access.

Held to the real server's documented behaviour (sonatype/nexus-public REST resources, the published OpenAPI of
sonatype-nexus-community/nexus-repo-api-client spec/openapi.yaml; tests/data/reference/nexus/), never
shaped around our client. Start it in-process with `NexusEmulator(data_dir).start()` or as a process with
`python -m runbook_lab.nexus --data-dir DIR --port N`.

Modules: state.py (everything Nexus knows, persisted), rest.py (HTTP front, auth, errors), rest_repos.py,
rest_security.py, rest_system.py (resources), validation.py (Jackson binding + bean validation),
permissions.py (privileges and wildcard permissions), emulator.py (assembly), connector.py and
dockercache.py (the docker connectors and pull-through cache).
"""

from runbook_lab.nexus.emulator import NexusEmulator
from runbook_lab.nexus.state import NexusState

__all__ = ["NexusEmulator", "NexusState"]
