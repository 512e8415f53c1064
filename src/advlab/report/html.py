"""The self-contained HTML report of a run folder: sections, tables and figures inlined."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from advlab import __version__
from advlab.errors import AdvlabError
from advlab.report.runfiles import load_run
from advlab.runtime import atomic_write

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 1em 0; } td, th { border: 1px solid #ccc; padding: 4px 10px; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #555; max-width: 520px; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; }
"""


def _cell(value) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.4g}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _table(table: dict) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table["columns"])
    rows = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in table["rows"])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


MAX_FIGURE_BYTES = 64 * 2**20


def figure_file(run: Path, name: str) -> Path:
    """The file a section's figure names, which must lie inside the run folder: a relative name under
    figures/ that, symbolic links resolved, stays inside the folder (no '../../etc/passwd', no
    absolute path, no link leading out)."""
    if not name or Path(name).is_absolute() or "\\" in name or ".." in Path(name).parts:
        raise AdvlabError(f"{run}: figure {name!r} must be a file name inside figures/ (no absolute path or '..')")
    path = run / "figures" / name
    try:
        inside = path.resolve(strict=True).is_relative_to(run.resolve(strict=True))
    except (OSError, RuntimeError):  # missing, or a symbolic link loop
        raise AdvlabError(f"{run} lists figure {name} but figures/{name} is missing") from None
    if not inside:
        raise AdvlabError(f"{run}: figures/{name} is a link leading out of the run folder; only files inside it "
                          "are embedded")
    if not path.is_file():
        raise AdvlabError(f"{run}: figures/{name} is not a regular file")
    if path.stat().st_size > MAX_FIGURE_BYTES:
        raise AdvlabError(f"{run}: figures/{name} is larger than {MAX_FIGURE_BYTES // 2**20} MiB")
    return path


def _figure(run: Path, fig: dict) -> str:
    data = base64.b64encode(figure_file(run, fig["file"]).read_bytes()).decode()
    caption = html.escape(fig.get("caption", ""))
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
            f"<figcaption>{caption}</figcaption></figure>")


def render_report(run: Path, name: str | None = None) -> str:
    """The page for run folder `run`; `name` is the folder's published name when run is still the
    temporary folder it is built in."""
    config, metrics, sections = load_run(run)
    command = html.escape(str(config.get("command", "run")))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>advlab {command}"
             f" report</title><style>{STYLE}</style></head><body>",
             f"<h1>advlab {command}</h1>",
             f"<p>Run folder <code>{html.escape(name or run.name)}</code>, advlab {__version__}.</p>"]
    for section in sections:
        parts.append(f"<section id='{html.escape(section.get('key', ''))}'><h2>{html.escape(section['title'])}</h2>")
        if section.get("text"):
            parts += [f"<p>{html.escape(p)}</p>" for p in section["text"].split("\n\n")]
        if section.get("table"):
            parts.append(_table(section["table"]))
        parts += [_figure(run, fig) for fig in section.get("figures", [])]
        parts.append("</section>")
    parts.append("<h2>Metrics</h2><details><summary>metrics.json</summary><pre>"
                 f"{html.escape(json.dumps(metrics, indent=2))}</pre></details>")
    parts.append("<h2>Configuration</h2><details><summary>config.json</summary><pre>"
                 f"{html.escape(json.dumps(config, indent=2))}</pre></details></body></html>")
    return "\n".join(parts)


def write_report(run: str | Path, name: str | None = None) -> Path:
    """Render run/report.html (atomically) and return its path."""
    run = Path(run)
    page = render_report(run, name)
    return atomic_write(run / "report.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))
