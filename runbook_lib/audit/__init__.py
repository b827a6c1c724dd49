"""Audit records of runbook runs: per-stage records, banners, HTML reports, run index, destinations.

Everything here writes through the redactor (``redact_io``); nbconvert is imported only when
rendering.
"""

from runbook_lib.audit.destinations import DESTINATIONS, LocalFolder, OutputHandler, OutputRegistry
from runbook_lib.audit.record import RECORD_MIME, StageRecords, change_counts, collect_records
from runbook_lib.audit.redact_io import RedactedOutput, register_secret
from runbook_lib.audit.report import report

__all__ = [
    "DESTINATIONS",
    "RECORD_MIME",
    "LocalFolder",
    "OutputHandler",
    "OutputRegistry",
    "RedactedOutput",
    "StageRecords",
    "change_counts",
    "collect_records",
    "register_secret",
    "report",
]
