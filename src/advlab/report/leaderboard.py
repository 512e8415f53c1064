"""The leaderboard: the evaluation records as one table, in Markdown and as a sortable HTML page.

One row per record (a model under one protocol, its settings and images): the model, its training
recipe and cost (from the checkpoint's metadata), the protocol, the images, clean accuracy, robust
accuracy at each eps (the per-sample worst case of the protocol) or certified accuracy at each L2
radius, and the masking diagnostics that fired. The HTML page sorts by any column on a click, like
RobustBench's table, with a few lines of plain JavaScript and nothing fetched from anywhere.
"""

from __future__ import annotations

import html
import json

from advlab import __version__
from advlab.errors import AdvlabError
from advlab.evaluation.records import Record

FIXED = ["model", "recipe", "training", "protocol", "images", "clean"]
LAST = "diagnostics fired"


def _recipe(model: dict) -> str:
    recipe = dict(model.get("recipe") or {"method": "standard"})
    method = recipe.pop("method", "?")
    settings = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(recipe.items()))
    return method + (f" ({settings})" if settings else "")


def _model_name(model: dict) -> str:
    """The checkpoint's file name (without .safetensors) and its architecture."""
    source = str(model.get("source") or model.get("label") or "?")
    stem = source.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".safetensors")
    arch = model.get("architecture")
    return f"{stem} ({arch})" if arch and arch != stem else stem


def _training(model: dict) -> str:
    parts = []
    if model.get("epochs") is not None:
        parts.append(f"{model['epochs']} epochs")
    if model.get("train_subset"):
        parts.append(f"{model['train_subset']:,} images")
    if model.get("train_seconds") is not None:
        parts.append(f"{model['train_seconds']:,.0f} s")
    return ", ".join(parts) or "?"


def _scores(record: Record) -> tuple[float | None, dict[str, float], list[str]]:
    """(clean accuracy, score columns, diagnostics that fired) of one record."""
    r, s = record.result, record.settings
    if record.protocol == "certify":
        scores = {f"certified L2 {radius} (sigma {s['sigma']:g})": acc
                  for radius, acc in r.get("certified_accuracy", {}).items()}
        return r.get("clean_accuracy_of_g"), scores, []
    if "eps" in r and "worst_case" in r:
        norm = "L2" if s.get("norm") == "l2" else "Linf"
        scores = {f"{norm} {e:g} ({record.protocol})": acc for e, acc in zip(r["eps"], r["worst_case"], strict=True)}
        fired = [d["name"] for d in r.get("diagnostics", []) if d.get("fired")]
        return r.get("clean_accuracy"), scores, fired
    return r.get("clean_accuracy"), {}, []


def _score_order(column: str) -> tuple:
    """Robust columns by protocol, norm and eps, then certified ones by sigma and radius."""
    certified = column.startswith("certified")
    words = column.replace("(", " ").replace(")", " ").split()
    numbers = []
    for w in words:
        try:
            numbers.append(float(w))
        except ValueError:
            pass
    return (certified, words[-1] if not certified else "", words[0], numbers[::-1] if certified else numbers)


def leaderboard_table(records: list[Record], dataset: str | None = None, protocol: str | None = None) -> dict:
    """{columns, rows, keys} of the records (filtered by data set and protocol); numbers stay numbers,
    missing values are None."""
    chosen = [r for r in records if (dataset is None or r.settings.get("dataset", r.model.get("dataset")) == dataset)
              and (protocol is None or r.protocol == protocol)]
    parsed = [(r, *_scores(r)) for r in chosen]
    score_columns = sorted({c for _, _, scores, _ in parsed for c in scores}, key=_score_order)
    rows = []
    for record, clean, scores, fired in parsed:
        images = record.settings.get("images") or record.result.get("n") or record.result.get("images")
        rows.append([_model_name(record.model), _recipe(record.model),
                     _training(record.model), record.protocol, images, clean,
                     *[scores.get(c) for c in score_columns], ", ".join(fired) or "none"])
    return {"columns": [*FIXED, *score_columns, LAST], "rows": rows, "keys": [r.key for r, *_ in parsed]}


def sort_table(table: dict, column: str | None, descending: bool = True) -> dict:
    """Rows ordered by column (case-insensitive name; default: the first score column, else clean
    accuracy), missing values last. An unknown column is a user error naming the choices."""
    columns = table["columns"]
    if column is None:
        column = columns[len(FIXED)] if len(columns) > len(FIXED) + 1 else "clean"
    lowered = [c.lower() for c in columns]
    if column.lower() not in lowered:
        raise AdvlabError(f"unknown --sort column {column!r}; choose one of: {', '.join(columns)}")
    i = lowered.index(column.lower())
    rows = table["rows"]

    def key(j):
        v = rows[j][i]
        return (0, float(v), "") if isinstance(v, (int, float)) else (1, 0.0, str(v).lower())

    present = sorted((j for j in range(len(rows)) if rows[j][i] is not None), key=key, reverse=descending)
    order = present + [j for j in range(len(rows)) if rows[j][i] is None]
    return {**table, "rows": [table["rows"][j] for j in order], "keys": [table["keys"][j] for j in order],
            "sorted_by": columns[i], "descending": descending}


def _text(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{100 * value:.2f}%"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown(table: dict) -> str:
    def cell(v):
        return _text(v).replace("|", "\\|")

    lines = ["| " + " | ".join(table["columns"]) + " |", "|" + " --- |" * len(table["columns"])]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table["rows"]]
    return "\n".join(lines)


SORT_SCRIPT = """
document.querySelectorAll('th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var down = th.getAttribute('data-dir') !== 'desc';
    th.closest('tr').querySelectorAll('th').forEach(function (h) { h.removeAttribute('data-dir'); });
    th.setAttribute('data-dir', down ? 'desc' : 'asc');
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].getAttribute('data-v'), y = b.cells[col].getAttribute('data-v');
      if (x === '') return 1; if (y === '') return -1;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return down ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""

PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 4px 8px; }
th { background: #f0f0f0; cursor: pointer; user-select: none; } th[data-dir=desc]::after { content: ' \\25BC'; }
th[data-dir=asc]::after { content: ' \\25B2'; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.fired { color: #a00; } p.note { color: #555; max-width: 60em; }
"""


def leaderboard_html(table: dict, title: str = "advlab leaderboard", note: str = "") -> str:
    """A self-contained page: the table, sortable by a click on any header (plain JavaScript)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table["columns"])
    body = []
    for row in table["rows"]:
        cells = []
        for column, v in zip(table["columns"], row, strict=True):
            data = "" if v is None else (repr(float(v)) if isinstance(v, (int, float)) else str(v))
            css = "num" if isinstance(v, (int, float)) else ("fired" if column == LAST and v != "none" else "")
            cells.append(f'<td class="{css}" data-v="{html.escape(data)}">{html.escape(_text(v))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{PAGE_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class=\"note\">{html.escape(note)}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"<p class=\"note\">advlab {html.escape(__version__)}. Click a column header to sort.</p>"
            f"<script>{SORT_SCRIPT}</script></body></html>\n")


def table_json(table: dict) -> str:
    return json.dumps(table, indent=2) + "\n"


NOTE = ("One row per evaluation: a checkpoint (by content hash) under one protocol, its settings and its "
        "images. Robust columns are the per-sample worst case of the protocol's attacks at each L-inf (or L2) "
        "eps; certified columns the randomized-smoothing certified accuracy at each L2 radius. Training cost "
        "comes from the checkpoint's metadata.")


def add_leaderboard(run_dir, table: dict) -> None:
    """leaderboard.html (sortable) and leaderboard.json in the run folder, its metrics and section."""
    (run_dir.tmp / "leaderboard.html").write_text(leaderboard_html(table, note=NOTE))
    (run_dir.tmp / "leaderboard.json").write_text(table_json(table))
    run_dir.metrics = {"records": len(table["rows"]), "keys": table["keys"]}
    run_dir.add_section("Leaderboard", NOTE + " The sortable page is leaderboard.html in this folder.",
                        table={"columns": table["columns"], "rows": table["rows"]}, key="leaderboard")
