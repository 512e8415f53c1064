"""Reading a run folder's files (config.json, metrics.json, report.json), checked: what the HTML
report (report.html) and the commands that read runs rely on. Writing them is report.run's RunDir.
"""

from __future__ import annotations

import json
from pathlib import Path

from advlab.errors import AdvlabError

RUN_FILES = ("config.json", "metrics.json", "report.json")


def load_run(path: str | Path) -> tuple[dict, dict, list[dict]]:
    """Read a run folder's config, metrics and sections, with a clear error if it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise AdvlabError(f"run folder {path} does not exist")
    parts = []
    for name in RUN_FILES:
        try:
            parts.append(json.loads((path / name).read_text()))
        except FileNotFoundError:
            raise AdvlabError(f"{path} is not an advlab run folder (no {name})") from None
        except json.JSONDecodeError as exc:
            raise AdvlabError(f"{path / name} is corrupt ({exc.msg} at line {exc.lineno})") from None
    config, metrics, report = parts
    return check_run_files(path, config, metrics, report)


def _fail(path: Path, what: str) -> None:
    raise AdvlabError(f"{path}: {what}; the run folder was not written by advlab or was edited")


def check_run_files(path: Path, config, metrics, report) -> tuple[dict, dict, list[dict]]:
    """Check the shapes the report relies on (report files are input too): objects where objects are
    expected, sections with a title, tables with columns and rows of that width, figures named by a
    file name. Returns (config, metrics, sections)."""
    for name, value in (("config.json", config), ("metrics.json", metrics), ("report.json", report)):
        if not isinstance(value, dict):
            _fail(path, f"{name} must hold a JSON object, got a {type(value).__name__}")
    sections = report.get("sections", [])
    if not isinstance(sections, list):
        _fail(path, f"report.json 'sections' must be a list, got a {type(sections).__name__}")
    for k, section in enumerate(sections):
        where = f"report.json section {k}"
        if not isinstance(section, dict):
            _fail(path, f"{where} must be an object, got a {type(section).__name__}")
        if not isinstance(section.get("title"), str):
            _fail(path, f"{where} needs a string 'title'")
        for key in ("text", "key"):
            if section.get(key) is not None and not isinstance(section[key], str):
                _fail(path, f"{where} '{key}' must be a string")
        table = section.get("table")
        if table is not None:
            if not isinstance(table, dict) or not isinstance(table.get("columns"), list) or not table["columns"]:
                _fail(path, f"{where} table must be an object with a non-empty 'columns' list")
            rows = table.get("rows", [])
            width = len(table["columns"])
            if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) == width for r in rows):
                _fail(path, f"{where} table 'rows' must be a list of rows of {width} cells (one per column)")
        figures = section.get("figures", [])
        if not isinstance(figures, list) or not all(
                isinstance(f, dict) and isinstance(f.get("file"), str) and isinstance(f.get("caption", ""), str)
                for f in figures):
            _fail(path, f"{where} 'figures' must be a list of objects with a string 'file' (and 'caption')")
    return config, metrics, sections
