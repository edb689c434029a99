"""Render one sample's report: papermill executes the template notebook, nbconvert turns it into one HTML file.

The page is self-contained (figures embedded as data URIs, styles and the small table-sorting script inline, no
network access needed) and hides the code until the reader asks for it.
"""
from __future__ import annotations

import contextlib
import html
import os
import re
import tempfile
import time
from importlib import resources
from pathlib import Path

from .._utils import logger, prefer_own_libpython
from ..errors import InputError, ReportFailed, option
from .request import ReportRequest
from .sections import SECTIONS, SMALL_TABLE_ROWS

TEMPLATE_NAME = "sample_report.ipynb"
_KERNEL = "python3"


def template_path() -> Path:
    """The report template shipped with the package (``templates/`` of the repository)."""
    return Path(str(resources.files("spatialdomains").joinpath("templates", TEMPLATE_NAME)))


def workflow_path() -> Path:
    """The Snakemake workflow shipped with the package (``inst/workflow/Snakefile`` of the repository)."""
    return Path(str(resources.files("spatialdomains").joinpath("workflow", "Snakefile")))


def render_report(inputs=None, out: str | os.PathLike | None = None, *, request: ReportRequest | None = None,
                  outputs_dir: str | os.PathLike | None = None, notebook: str | os.PathLike | None = None,
                  show_code: bool = False, timeout: int | None = None, force: bool = False, **options) -> Path:
    """Analyse one sample and write its HTML report to ``out`` (see :func:`spatialdomains.report.sample.analyse`).

    What to compute is one :class:`~spatialdomains.report.request.ReportRequest`: ``request``, or built from
    ``inputs`` and ``options`` (its fields and the method's settings by name, e.g. ``n_domains=7``,
    ``preset='cells'``, ``epochs=50``; see :meth:`ReportRequest.build`), checked before any work.
    ``outputs_dir`` also receives the sample's files (:mod:`spatialdomains.results`); ``notebook`` the executed
    notebook. A failure inside the notebook is raised with the notebook's own error message. Nothing is written
    unless the whole report succeeded; ``force`` replaces an earlier report at ``out`` and earlier results in
    ``outputs_dir`` (never a file or folder spatialdomains did not write, nor an input).
    """
    import nbformat
    import papermill

    from ..errors import current_interface

    if out is None:
        raise InputError(f"{option('out')}: give the HTML file to write")
    request = request if request is not None else ReportRequest.build(inputs, **options)
    targets = _report_outputs(out, outputs_dir, notebook, force, inputs=request.paths())
    for target in targets.values():
        target.check()  # before any work: the destinations must not hold the inputs or another run's results
    from .. import methods

    registered = methods.session_method(request.method)  # a method registered in this process: from its file
    parameters = {"request": request.as_dict(), "outputs_dir": None, "interface": current_interface(),
                  "methods": {request.method: registered} if registered else {}}
    sample = request.sample_name()
    start = time.perf_counter()
    prefer_own_libpython()
    marker = {"command": "report", "method": request.method,
              "inputs": [str(Path(p).resolve()) for p in request.inputs]}
    with tempfile.TemporaryDirectory(prefix="spatialdomains-report-") as work, contextlib.ExitStack() as staged:
        written = {name: staged.enter_context(target.writing(marker)) for name, target in targets.items()}
        if outputs_dir is not None:
            parameters["outputs_dir"] = str(written["outputs_dir"].resolve())
        for name, path in (("notebook", notebook), ("out", out)):
            if path is not None and name not in written:  # it goes inside the tables folder, staged with it
                written[name] = _inside(written, Path(outputs_dir), path)
        executed = Path(work) / TEMPLATE_NAME
        try:
            papermill.execute_notebook(str(template_path()), str(executed), parameters=parameters,
                                       kernel_name=_KERNEL, progress_bar=False, execution_timeout=timeout,
                                       cwd=os.getcwd(), log_output=False, kernel_manager_class=_local_kernels())
        except papermill.PapermillExecutionError as error:
            message = f"{error.ename}: {_plain(error.evalue)}"
            if error.ename.endswith("InputError"):
                raise InputError(_plain(error.evalue)) from None
            raise ReportFailed(f"the report notebook failed: {message}") from None
        node = nbformat.read(executed, as_version=4)
        if notebook is not None:
            nbformat.write(node, written["notebook"])
        page = notebook_to_html(node, title=f"spatialdomains report: {sample}", show_code=show_code)
        written["out"].write_text(page, encoding="utf-8")
    logger.info("report for %s written to %s in %.1f s", sample, out, time.perf_counter() - start)
    return Path(out)


def _report_outputs(out, outputs_dir, notebook, force: bool, *, inputs: list) -> dict:
    """The report's destinations, named as the interface in use spells them: the tables folder, and the page and
    the notebook unless they go inside that folder (then they are written with it, as one)."""
    from ..outputs import Output

    inputs = [p for p in inputs if p is not None]
    force_flag = option("force", True)
    targets = {}
    if outputs_dir is not None:
        targets["outputs_dir"] = Output(outputs_dir, inputs=inputs, force=force, flag=option("outputs_dir"),
                                        force_flag=force_flag)
    for name, path in (("out", out), ("notebook", notebook)):
        if path is not None and not (outputs_dir is not None and _is_within(path, outputs_dir)):
            targets[name] = Output(path, inputs=inputs, force=force, folder=False, flag=option(name),
                                   force_flag=force_flag)
    return targets


def _is_within(path, folder) -> bool:
    return Path(folder).resolve() in Path(path).resolve().parents


def _inside(written: dict, folder: Path, path) -> Path:
    """Where a file that belongs inside the staged tables folder is written."""
    relative = Path(path).resolve().relative_to(folder.resolve())
    target = written["outputs_dir"] / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def notebook_to_html(node, *, title: str, show_code: bool = False) -> str:
    """An executed notebook as one self-contained page: contents, sections, code folded away."""
    from nbconvert import HTMLExporter

    for cell in node.cells:  # warnings and progress on stderr are not part of a report
        if cell.get("outputs"):
            cell.outputs = [o for o in cell.outputs if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    exporter = HTMLExporter(template_name="basic", exclude_input_prompt=True, exclude_output_prompt=True)
    exporter.log.setLevel("ERROR")  # it warns about figures without alt text, which every matplotlib output is
    body, _ = exporter.from_notebook_node(node)
    contents = "".join(f'<li><a href="#{anchor}">{html.escape(name)}</a></li>' for anchor, name in SECTIONS
                       if f'id="{anchor}"' in body)  # the sections this sample has
    tables_style, tables_script = _tables_script()
    return _PAGE.format(title=html.escape(title), style=_STYLE, contents=contents, body=body,
                        tables_style=tables_style, tables_script=tables_script,
                        code_state="shown" if show_code else "hidden", script=_SCRIPT,
                        code_state_label="Hide code" if show_code else "Show code",
                        created=time.strftime("%Y-%m-%d %H:%M"))


def _local_kernels():
    """A kernel manager whose kernel talks over local (IPC) sockets in a private temporary folder: no network port
    is opened for the report's kernel, it does not warn that a TCP connection is unencrypted, and reports run at
    once (``batch --jobs``) or from one folder never share socket files."""
    import shutil
    import tempfile

    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum

    class LocalKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        def _ip_default(self) -> str:
            return os.path.join(tempfile.mkdtemp(prefix="spatialdomains-kernel-"), "kernel")

        async def _async_cleanup_resources(self, restart: bool = False) -> None:
            await super()._async_cleanup_resources(restart=restart)
            if not restart:
                shutil.rmtree(os.path.dirname(self.ip), ignore_errors=True)

    return LocalKernelManager


def _plain(text: str) -> str:
    """An error message without terminal colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", str(text))


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #222; }
header { background: #24425c; color: white; padding: 14px 28px; }
header h1 { margin: 0; font-size: 1.5em; }
header button { float: right; margin-top: 2px; }
nav { padding: 8px 28px; background: #eef2f5; font-size: 0.9em; }
nav ul { margin: 0; padding: 0; list-style: none; display: flex; flex-wrap: wrap; gap: 14px; }
main { padding: 8px 28px 40px; max-width: 1400px; }
h2.report-section { border-bottom: 2px solid #24425c; padding-bottom: 4px; margin-top: 36px; }
.code-hidden .jp-InputArea, .code-hidden .input_area, .code-hidden .jp-Cell-inputWrapper { display: none; }
.jp-RenderedImage img, .output_png img { max-width: 100%; height: auto; }
.table-wrap { overflow-x: auto; margin: 8px 0 22px; padding: 6px; border: 1px solid #ddd; font-size: 0.9em; }
table.sortable { border-collapse: collapse; }
table.sortable caption { caption-side: top; text-align: left; font-weight: 600; padding: 4px; }
table.sortable th { background: #f4f6f8; padding: 4px 8px; }
table.sortable td { padding: 3px 8px; border-top: 1px solid #eee; }
.report-note { color: #555; font-style: italic; }
.report-summary { font-size: 1.05em; line-height: 1.5; max-width: 1100px; }
table.sortable.small-table { width: auto !important; min-width: 320px; margin-left: 0 !important; }
.spot-map { position: relative; display: inline-block; }
.spot-map canvas { border: 1px solid #ddd; max-width: 100%; cursor: crosshair; }
.spot-map-tip { position: absolute; display: none; background: rgba(255, 255, 255, 0.95); border: 1px solid #999;
  padding: 2px 6px; font-size: 0.85em; pointer-events: none; white-space: nowrap; }
.swatch { display: inline-block; width: 14px; height: 14px; border-radius: 3px; vertical-align: middle; }
pre { white-space: pre-wrap; font-size: 0.8em; }
"""

_SCRIPT = """
(function () {
  document.querySelectorAll('.spot-map').forEach(function (box) {
    var data = JSON.parse(box.getAttribute('data-map'));
    var canvas = box.querySelector('canvas'), tip = box.querySelector('.spot-map-tip');
    var context = canvas.getContext('2d'), n = data.x.length;
    var minX = Math.min.apply(null, data.x), maxX = Math.max.apply(null, data.x);
    var minY = Math.min.apply(null, data.y), maxY = Math.max.apply(null, data.y);
    var base = 0.94 * Math.min(canvas.width / (maxX - minX || 1), canvas.height / (maxY - minY || 1));
    var view = {scale: base, dx: 0, dy: 0};
    function reset() {
      view.scale = base;
      view.dx = (canvas.width - base * (maxX - minX)) / 2 - base * minX;
      view.dy = (canvas.height - base * (maxY - minY)) / 2 - base * minY;
    }
    var radius = Math.max(1.5, 0.45 * Math.sqrt(canvas.width * canvas.height / n));
    function draw() {
      context.clearRect(0, 0, canvas.width, canvas.height);
      var r = Math.max(1, radius * view.scale / base);
      for (var i = 0; i < n; i++) {
        context.fillStyle = data.domain[i] < 0 ? '#d3d3d3' : data.colours[data.domain[i] % data.colours.length];
        context.fillRect(view.scale * data.x[i] + view.dx - r / 2, view.scale * data.y[i] + view.dy - r / 2, r, r);
      }
    }
    function nearest(px, py) {
      var best = -1, distance = Infinity;
      for (var i = 0; i < n; i++) {
        var ddx = view.scale * data.x[i] + view.dx - px, ddy = view.scale * data.y[i] + view.dy - py;
        var d = ddx * ddx + ddy * ddy;
        if (d < distance) { distance = d; best = i; }
      }
      return distance < 400 ? best : -1;
    }
    function position(event) {
      var rect = canvas.getBoundingClientRect();
      return [(event.clientX - rect.left) * canvas.width / rect.width,
              (event.clientY - rect.top) * canvas.height / rect.height];
    }
    var drag = null;
    canvas.addEventListener('wheel', function (event) {
      event.preventDefault();
      var p = position(event), factor = event.deltaY < 0 ? 1.25 : 0.8;
      view.dx = p[0] - factor * (p[0] - view.dx);
      view.dy = p[1] - factor * (p[1] - view.dy);
      view.scale *= factor;
      draw();
    }, {passive: false});
    canvas.addEventListener('mousedown', function (event) { drag = position(event); });
    window.addEventListener('mouseup', function () { drag = null; });
    canvas.addEventListener('dblclick', function () { reset(); draw(); });
    canvas.addEventListener('mousemove', function (event) {
      var p = position(event);
      if (drag) {
        view.dx += p[0] - drag[0];
        view.dy += p[1] - drag[1];
        drag = p;
        draw();
        return;
      }
      var i = nearest(p[0], p[1]);
      if (i < 0) { tip.style.display = 'none'; return; }
      var text = data.spots[i] + ': ' + data.key + ' ' + (data.domain[i] < 0 ? 'none' : data.names[data.domain[i]]);
      if (data.labels) { text += ', ' + data.label_key + ' ' + data.labels[i]; }
      tip.textContent = text;
      tip.style.display = 'block';
      tip.style.left = (event.offsetX + 14) + 'px';
      tip.style.top = (event.offsetY + 14) + 'px';
    });
    canvas.addEventListener('mouseleave', function () { tip.style.display = 'none'; });
    reset();
    draw();
  });
  var button = document.getElementById('toggle-code');
  button.addEventListener('click', function () {
    var hidden = document.body.classList.toggle('code-hidden');
    button.textContent = hidden ? 'Show code' : 'Hide code';
  });
})();
"""

#: Every table becomes a DataTables table (search, sort by value, paging, "Download CSV" of the whole table). The
#: library is read from the bundle that the itables package ships and is embedded in the page, so the report needs
#: no network. Small tables (settings) are only sortable. Without JavaScript the tables stay plain and complete.
_TABLES_SCRIPT = """
const bytes = Uint8Array.from(atob("{bundle}"), character => character.charCodeAt(0));  // UTF-8 as shipped
const url = URL.createObjectURL(new Blob([bytes], {{type: "application/javascript"}}));
const DataTable = (await import(url)).default;
URL.revokeObjectURL(url);
document.querySelectorAll("table.sortable").forEach(function (table) {{
  var small = table.tBodies[0].rows.length <= {small_rows} && !table.classList.contains("full-table");
  var caption = table.caption ? table.caption.textContent : "table";
  var name = caption.replace(/[^A-Za-z0-9]+/g, "_").replace(/^_|_$/g, "") || "table";
  var options = {{order: [], pageLength: 10, lengthMenu: [10, 25, 100, -1], autoWidth: false}};
  if (small) {{
    table.classList.add("small-table");
    Object.assign(options, {{paging: false, searching: false, info: false}});
  }} else {{
    options.layout = {{topStart: {{buttons: [{{extend: "csvHtml5", text: "Download CSV", filename: name, title: null,
      exportOptions: {{modifier: {{search: "none", order: "index", page: "all"}}}}}}]}}, topEnd: "search",
      bottomStart: ["pageLength", "info"], bottomEnd: "paging"}};
  }}
  new DataTable(table, options);
}});
document.body.setAttribute("data-tables-ready", "yes");
"""


def _tables_script() -> tuple[str, str]:
    """The DataTables bundle (CSS, and the script that turns every report table into one)."""
    import base64
    from importlib import resources

    bundle = resources.files("itables") / "html"
    script = base64.b64encode((bundle / "dt_bundle.js").read_bytes()).decode("ascii")
    return (bundle / "dt_bundle.css").read_text(encoding="utf-8"), _TABLES_SCRIPT.format(
        bundle=script, small_rows=SMALL_TABLE_ROWS)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="spatialdomains">
<title>{title}</title>
<style>{style}</style>
<style>{tables_style}</style>
</head>
<body class="code-{code_state}">
<header><button id="toggle-code" type="button">{code_state_label}</button><h1>{title}</h1>
<div>created {created}</div></header>
<nav><ul>{contents}</ul></nav>
<main>
{body}
</main>
<script>{script}</script>
<script type="module">{tables_script}</script>
</body>
</html>
"""
