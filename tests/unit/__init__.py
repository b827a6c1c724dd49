"""Unit tests of the runbook's modules."""
