"""Per-sample HTML reports and batches of them.

``render_report`` executes the template notebook for one sample (papermill) and writes one self-contained HTML
page; ``run_batch`` does it for every row of a samplesheet, one folder per sample, with an ``index.html``.
"""
from .render import render_report, template_path
from .sample import REPORT_METHODS, SampleResult, analyse

__all__ = ["REPORT_METHODS", "SampleResult", "analyse", "render_report", "template_path"]
