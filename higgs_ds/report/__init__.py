"""The run report: runs/<run>/report.html, written from the files a training run leaves (no training code)."""

from higgs_ds.report.page import REPORT, render_report, write_report
from higgs_ds.report.run_files import LISTENING_ROWS, RunFiles, read_jsonl, read_run

__all__ = ["LISTENING_ROWS", "REPORT", "RunFiles", "read_jsonl", "read_run", "render_report", "write_report"]
