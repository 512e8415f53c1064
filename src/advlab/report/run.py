"""Run folders: config.json, metrics.json, report.json (sections), figures/*.png and report.html.

A run is built in a hidden temporary sibling and renamed into place only when complete, so an
error never leaves a half-written run folder behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from advlab.errors import AdvlabError

RUN_FILES = ("config.json", "metrics.json", "report.json")


def default_run_path(command: str) -> Path:
    return Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"


class RunDir:
    """Collects a command's config, metrics, figures and report sections; commit() publishes them."""

    def __init__(self, path: str | Path | None, command: str, config: dict) -> None:
        self.path = Path(path) if path else default_run_path(command)
        if self.path.exists() and (not self.path.is_dir() or (any(self.path.iterdir())
                                                              and not (self.path / "config.json").exists())):
            raise AdvlabError(f"{self.path} exists and is not an advlab run folder; choose another --out")
        self.command = command
        self.config = {"command": command, **config}
        self.metrics: dict = {}
        self.sections: list[dict] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.partial-", dir=self.path.parent))
        (self.tmp / "figures").mkdir()

    def figure_path(self, name: str) -> Path:
        """Where to save figure `name` (a .png file name) inside the run being built."""
        return self.tmp / "figures" / name

    def add_section(self, title: str, text: str = "", table: dict | None = None,
                    figures: list[tuple[str, str]] = (), key: str | None = None) -> None:
        """A report section: text, an optional table {columns, rows}, figures as (file, caption)."""
        self.sections.append({"title": title, "key": key or title.lower().replace(" ", "_"), "text": text,
                              "table": table, "figures": [{"file": f, "caption": c} for f, c in figures]})

    def commit(self) -> Path:
        from advlab.report.html import write_report

        for name, payload in zip(RUN_FILES, (self.config, self.metrics, {"sections": self.sections}), strict=True):
            (self.tmp / name).write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
        write_report(self.tmp, self.path.name)
        if self.path.exists():
            shutil.rmtree(self.path)
        self.tmp.rename(self.path)
        return self.path

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in JSON")


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
