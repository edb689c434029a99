"""Per-sample HTML reports and batches of them.

``render_report`` executes the template notebook for one sample (papermill) and writes one self-contained HTML
page; ``run_batch`` does it for every row of a samplesheet, one folder per sample, with an ``index.html``. What a
report computes is one :class:`ReportRequest`, whichever door asks for it.
"""
from .render import render_report, template_path
from .request import ReportRequest, report_methods
from .result import SampleResult
from .sample import analyse

__all__ = ["ReportRequest", "SampleResult", "analyse", "render_report", "report_methods", "template_path"]
