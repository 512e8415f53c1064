"""Run folders, figures and the self-contained HTML report."""

from advlab.report.html import render_report, write_report
from advlab.report.run import RunDir, load_run

__all__ = ["RunDir", "load_run", "render_report", "write_report"]
