"""Evaluation records: every evaluation and certification in one SQLite database in the cache folder.

A record is keyed by what shapes its result: the checkpoint's content hash (SHA-256 of the file, or of
the weights for a model trained from an architecture name), the protocol, its settings, and the
images (SHA-256 of the evaluated images and labels, so the data set, n and the selection are all in
it). The same evaluation run again finds its record and reuses it; anything different misses.

The database lives at ``cache_dir() / "records.sqlite"`` (``ADVLAB_CACHE`` moves it). It is opened in
WAL mode with a busy timeout: each write is one transaction (a process killed mid-write leaves the
last committed state), readers never block writers, and concurrent writers wait for each other
(with a retry on top of SQLite's own timeout).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from advlab import __version__
from advlab.errors import AdvlabError
from advlab.runtime import cache_dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    key TEXT PRIMARY KEY,
    model_hash TEXT NOT NULL,
    protocol TEXT NOT NULL,
    settings TEXT NOT NULL,
    data_hash TEXT NOT NULL,
    model TEXT NOT NULL,
    result TEXT NOT NULL,
    created REAL NOT NULL,
    advlab_version TEXT NOT NULL
)
"""
BUSY_TIMEOUT_S = 30.0
RETRIES = 5


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 over the model's state dict (names, dtypes, shapes and bytes), for models without a file."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)  # 1-D: a 0-d tensor (BatchNorm's counter) has no byte view
        digest.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def data_sha256(*tensors: torch.Tensor) -> str:
    """SHA-256 of the evaluated tensors (images and labels): the data set, n and the selection at once."""
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def canonical(value) -> str:
    """JSON with sorted keys and floats written exactly, so equal settings give equal keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def record_key(model_hash: str, protocol: str, settings: dict, data_hash: str) -> str:
    return hashlib.sha256(canonical({"model": model_hash, "protocol": protocol, "settings": settings,
                                     "data": data_hash}).encode()).hexdigest()


@dataclass
class Record:
    key: str
    model_hash: str
    protocol: str
    settings: dict
    data_hash: str
    model: dict  # label, architecture, dataset, recipe, training cost, checkpoint path
    result: dict  # protocol-specific: clean accuracy, robust / certified accuracy, diagnostics fired
    created: float
    advlab_version: str = __version__


def _row_to_record(row) -> Record:
    key, model_hash, protocol, settings, data_hash, model, result, created, version = row
    return Record(key, model_hash, protocol, json.loads(settings), data_hash, json.loads(model), json.loads(result),
                  created, version)


class RecordStore:
    """The evaluation database. ``RecordStore()`` opens (or creates) the one in the cache folder."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else cache_dir() / "records.sqlite"
        if self.path.exists() and not self.path.is_file():
            raise AdvlabError(f"{self.path} is not a file; point ADVLAB_CACHE elsewhere")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            self._retry(lambda: db.execute(SCHEMA))

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise AdvlabError(f"cannot open the evaluation records {self.path} ({exc})") from None
        try:
            self._retry(lambda: db.execute("PRAGMA journal_mode=WAL"))
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            yield db
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            raise AdvlabError(f"{self.path} is not a readable advlab records database ({exc}); move it away and "
                              "run again (advlab never deletes it)") from None
        finally:
            db.close()

    @staticmethod
    def _retry(op):
        for attempt in range(RETRIES):
            try:
                return op()
            except sqlite3.OperationalError as exc:  # busy beyond SQLite's own timeout
                if ("locked" not in str(exc) and "busy" not in str(exc)) or attempt == RETRIES - 1:
                    raise
                time.sleep(0.1 * 2 ** attempt)
        return None

    def get(self, key: str) -> Record | None:
        with self._connect() as db:
            row = self._retry(lambda: db.execute("SELECT * FROM records WHERE key = ?", (key,)).fetchone())
        return _row_to_record(row) if row else None

    def put(self, record: Record) -> None:
        """Write one record in one transaction (replacing an older one with the same key)."""
        values = (record.key, record.model_hash, record.protocol, canonical(record.settings), record.data_hash,
                  json.dumps(record.model), json.dumps(record.result), record.created,
                  record.advlab_version)

        def write(db):
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        with self._connect() as db:
            self._retry(lambda: write(db))

    def all(self) -> list[Record]:
        with self._connect() as db:
            rows = self._retry(lambda: db.execute("SELECT * FROM records ORDER BY created").fetchall())
        return [_row_to_record(r) for r in rows]

    def __len__(self) -> int:
        with self._connect() as db:
            return self._retry(lambda: db.execute("SELECT COUNT(*) FROM records").fetchone()[0])


def model_summary(meta: dict, label: str, source: str) -> dict:
    """What the leaderboard shows of a model: name, architecture, data set, recipe and training cost."""
    train = meta.get("train_config") if isinstance(meta.get("train_config"), dict) else {}
    return {"label": label, "source": source, "architecture": meta.get("architecture"),
            "dataset": meta.get("dataset"), "recipe": meta.get("recipe") or {"method": "standard"},
            "train_seconds": meta.get("train_seconds"), "epochs": train.get("epochs"),
            "train_subset": train.get("train_subset"),
            "test_accuracy": meta.get("test_accuracy")}


def model_hash(spec: str, model: nn.Module) -> str:
    """An advlab checkpoint file's SHA-256, else that of the weights (a foreign model's file alone does not
    tell what was put in front of it, such as --mean/--std's Normalize)."""
    path = Path(spec)
    return file_sha256(path) if path.is_file() and path.suffix == ".safetensors" else weights_sha256(model)


def recorded(store: RecordStore, model_hash: str, protocol: str, settings: dict, data_hash: str, model: dict,
             compute, force: bool = False) -> tuple[Record, bool]:
    """The record of this evaluation: read from the store when there is one (and not force), else
    compute() (a result dict) and write it. Returns (record, reused)."""
    settings = {**settings, "advlab_version": __version__}
    key = record_key(model_hash, protocol, settings, data_hash)
    if not force:
        found = store.get(key)
        if found is not None:
            return found, True
    record = Record(key, model_hash, protocol, settings, data_hash, model, compute(), time.time())
    store.put(record)
    return record, False
