"""eks-mirror-runbook: parameterized stage notebooks over this helper library."""

import sys as _sys

# jsonschema imports rfc3987_syntax whenever it is installed (jupyter-events, part of JupyterLab, depends on
# it), and that module compiles its grammar at import: about 1.5 s in the runner (nbformat validates with
# jsonschema) and again in each stage kernel that validates manifests. It only serves the "iri" format
# checks; the runbook and the notebook tooling it runs use no format checker, and jsonschema/_format.py
# treats the missing module as "format not checked". Measured with bench/stage_bench.py (issue #15).
if "jsonschema" not in _sys.modules:
    _sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[assignment]
