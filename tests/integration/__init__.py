"""Integration tests: stages on the lab, real containerd and network namespaces."""
