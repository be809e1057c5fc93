"""The drift report: one row per host from its plan, in text, JSON, Prometheus, JUnit XML or HTML.

``rows.py`` makes the rows, the exit code and the text table; ``formats.py`` renders and writes the
other formats (``write_report(path, rows, meta)`` picks one by the file's suffix). The JSON document
is described by schemas/drift-report.schema.json. This module is the package's interface.
"""

from kvm_drivers.report.formats import (
    FORMATS,
    document,
    render,
    to_html,
    to_json,
    to_junit,
    to_prometheus,
    write_atomic,
    write_report,
)
from kvm_drivers.report.rows import (
    EXIT_CODES,
    EXIT_NO_HOSTS,
    EXIT_REPORT_FAILED,
    EXIT_USAGE,
    changes,
    changes_text,
    counts,
    exit_code,
    host_row,
    ordered,
    printable,
    read_previous,
    text_table,
)

__all__ = [
    "EXIT_CODES",
    "EXIT_NO_HOSTS",
    "EXIT_REPORT_FAILED",
    "EXIT_USAGE",
    "FORMATS",
    "changes",
    "changes_text",
    "counts",
    "document",
    "exit_code",
    "host_row",
    "ordered",
    "printable",
    "read_previous",
    "render",
    "text_table",
    "to_html",
    "to_json",
    "to_junit",
    "to_prometheus",
    "write_atomic",
    "write_report",
]
