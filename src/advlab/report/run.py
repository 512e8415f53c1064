"""Run folders: config.json, metrics.json, report.json (sections), figures/*.png and report.html.

A run is built in a hidden temporary sibling and renamed into place only when complete, so an
error never leaves a half-written run folder behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from advlab.errors import AdvlabError
from advlab.report.html import write_report
from advlab.report.runfiles import RUN_FILES, check_run_files, load_run  # noqa: F401 (the package's names)
from advlab.runtime import check_writable_folder, exclusive_lock, lock_is_held

MANIFEST = ".advlab-run.json"  # the files advlab wrote into a run folder: what --overwrite may replace
STANDARD_ENTRIES = {*RUN_FILES, "report.html", "figures", MANIFEST}
PARTIAL = ".partial-"


def default_run_path(command: str) -> Path:
    """runs/COMMAND-DATE-TIME; commit() adds -2, -3, ... when that name is taken (by a run started
    in the same second, in this process or another)."""
    return Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"


def foreign_entries(folder: Path) -> list[str]:
    """What in an existing folder advlab did not write as a run: everything, unless it is a run folder
    (config.json naming a command, metrics.json, report.json), then what its manifest (or, for runs
    older than manifests, the standard run files) does not list."""
    entries = sorted(p.name for p in folder.iterdir())
    try:
        config = json.loads((folder / "config.json").read_text())
        is_run = isinstance(config, dict) and "command" in config and all((folder / n).is_file() for n in RUN_FILES)
    except (OSError, ValueError):
        is_run = False
    if not is_run:
        return entries
    try:
        written = json.loads((folder / MANIFEST).read_text())
        known = {str(name).split("/")[0] for name in written} | {MANIFEST}
    except (OSError, ValueError, TypeError):
        known = STANDARD_ENTRIES
    return [name for name in entries if name not in known]


def check_run_destination(path: str | Path | None, overwrite: bool = False) -> None:
    """Refuse, before any work, a run folder that would replace what advlab did not write or could not
    be written: an existing non-empty folder without --overwrite, a file, a folder under a file, an
    unwritable place."""
    if path is None:
        check_writable_folder(Path("runs"), "the run folder runs/")
        return
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise AdvlabError(f"--out {path} is a file; give a folder name")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise AdvlabError(f"--out {path} already exists and is not empty; choose another folder, or pass "
                              "--overwrite to replace an earlier run there")
        foreign = foreign_entries(path)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise AdvlabError(f"--out {path} holds files advlab did not write as a run ({shown}); --overwrite only "
                              "replaces an earlier run folder: choose another folder")
    check_writable_folder(path.parent, f"--out {path}")


def remove_dead_partials(parent: Path) -> list[Path]:
    """Remove the half-built run folders (.NAME.partial-*) of runs that died in parent (killed, power
    loss): only advlab's own (each has a lock file beside it) and only when no live process holds
    that lock. Returns what was removed."""
    removed = []
    if not parent.is_dir():
        return removed
    for lock in parent.glob(f".*{PARTIAL}*.lock"):
        folder = lock.with_name(lock.name[: -len(".lock")])
        if lock_is_held(lock):
            continue
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        lock.unlink(missing_ok=True)
    return removed


class RunDir:
    """Collects a command's config, metrics, figures and report sections; commit() publishes them.

    The run is built in a hidden sibling (.NAME.partial-XXXX, locked by this process while it runs)
    and renamed into place only when complete. An existing non-empty destination is refused unless
    overwrite, and even then only an earlier run folder is replaced; partial folders of dead runs in
    the same parent are removed.
    """

    def __init__(self, path: str | Path | None, command: str, config: dict, overwrite: bool = False) -> None:
        self.explicit = path is not None and str(path) != ""
        self.path = Path(path) if self.explicit else default_run_path(command)
        self.overwrite = overwrite
        if self.explicit:
            check_run_destination(self.path, overwrite)
        self.command = command
        self.config = {"command": command, **config}
        self.metrics: dict = {}
        self.sections: list[dict] = []
        self._stack = contextlib.ExitStack()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AdvlabError(f"cannot create {self.path.parent} ({exc.strerror or exc}); "
                              "choose another --out") from None
        remove_dead_partials(self.path.parent)
        try:
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}{PARTIAL}", dir=self.path.parent))
        except OSError as exc:
            raise AdvlabError(f"cannot write in {self.path.parent} ({exc.strerror or exc}); "
                              "choose another --out") from None
        self._lock = self.tmp.with_name(self.tmp.name + ".lock")
        self._stack.enter_context(exclusive_lock(self._lock, f"{self._lock} is held by another process"))
        (self.tmp / "figures").mkdir()

    def figure_path(self, name: str) -> Path:
        """Where to save figure `name` (a .png file name) inside the run being built."""
        return self.tmp / "figures" / name

    def add_section(self, title: str, text: str = "", table: dict | None = None,
                    figures: list[tuple[str, str]] = (), key: str | None = None) -> None:
        """A report section: text, an optional table {columns, rows}, figures as (file, caption)."""
        self.sections.append({"title": title, "key": key or title.lower().replace(" ", "_"), "text": text,
                              "table": table, "figures": [{"file": f, "caption": c} for f, c in figures]})

    def _reserve(self) -> Path:
        """An unused default name, claimed by creating it (mkdir is atomic: two processes never get the same)."""
        for attempt in range(1, 10_000):
            candidate = self.path if attempt == 1 else self.path.with_name(f"{self.path.name}-{attempt}")
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                continue
        raise AdvlabError(f"no free run folder name next to {self.path}; pass --out")

    def commit(self) -> Path:
        for name, payload in zip(RUN_FILES, (self.config, self.metrics, {"sections": self.sections}), strict=True):
            (self.tmp / name).write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
        if not self.explicit:
            self.path = self._reserve()  # an empty folder of ours, replaced by the rename below
        write_report(self.tmp, self.path.name)
        written = sorted(p.relative_to(self.tmp).as_posix() for p in self.tmp.rglob("*"))
        (self.tmp / MANIFEST).write_text(json.dumps(written, indent=1) + "\n")
        replaced = None
        if self.explicit and self.path.is_dir() and any(self.path.iterdir()):
            check_run_destination(self.path, self.overwrite)  # again: it may have changed while we ran
            replaced = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.replaced-", dir=self.path.parent))
            os.replace(self.path, replaced)  # onto our own empty folder
        try:
            os.replace(self.tmp, self.path)  # also onto an empty folder (a reserved name, or an empty --out)
        except OSError as exc:
            if replaced is not None:
                os.replace(replaced, self.path)
            raise AdvlabError(f"cannot publish the run at {self.path} ({exc.strerror or exc}); it was created by "
                              "someone else while this run worked: choose another --out") from None
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)  # the earlier run, which --overwrite replaces
        self._release()
        return self.path

    def _release(self) -> None:
        self._stack.close()
        self._lock.unlink(missing_ok=True)

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._release()

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
