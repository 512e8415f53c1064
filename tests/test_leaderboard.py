"""The evaluation records (SQLite in the cache folder) and advlab leaderboard: a record is reused,
missed when the checkpoint, the protocol's settings or the images change, recomputed with --force;
concurrent writers all land; a writer killed mid-write leaves a readable, consistent database; bad
input is one line and exit code 2."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from advlab.cli.main import main
from advlab.evaluation.records import Record, RecordStore, data_sha256, file_sha256, record_key, recorded
from advlab.report.leaderboard import leaderboard_table, sort_table

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = ["--n", "20", "--eps", "0.1,0.2", "--steps", "3", "--restarts", "1", "--blackbox-n", "0", "--unbounded-n", "0",
        "--effort-n", "0", "--no-progress"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh cache folder (and so a fresh records database) for one test."""
    path = tmp_path / "cache"
    monkeypatch.setenv("ADVLAB_CACHE", str(path))
    return path


def evaluate(path, tmp_path, name, *extra):
    return main(["evaluate", str(path), *TINY, *extra, "--out", str(tmp_path / name), "--json",
                 str(tmp_path / f"{name}.json")])


def evaluation(tmp_path, name) -> dict:
    (ev,) = json.loads((tmp_path / f"{name}.json").read_text())["evaluations"].values()
    return ev


def test_an_evaluation_is_recorded_reused_and_recomputed_with_force(lenet_mnist, cache, tmp_path, capsys):
    _, _, path = lenet_mnist
    assert evaluate(path, tmp_path, "a") == 0
    first = evaluation(tmp_path, "a")
    assert not first["reused_record"] and "reusing" not in capsys.readouterr().out
    assert len(RecordStore(cache / "records.sqlite")) == 1
    assert evaluate(path, tmp_path, "b") == 0
    assert "reusing it (--force recomputes)" in capsys.readouterr().out
    second = evaluation(tmp_path, "b")
    assert second["reused_record"] and second["record"] == first["record"]
    assert second["worst_case"] == first["worst_case"] and second["diagnostics"] == first["diagnostics"]
    assert evaluate(path, tmp_path, "c", "--force") == 0
    assert "reusing" not in capsys.readouterr().out and not evaluation(tmp_path, "c")["reused_record"]
    assert len(RecordStore(cache / "records.sqlite")) == 1  # the same key, rewritten


@pytest.mark.parametrize("change", [["--steps", "4"], ["--eps", "0.1,0.3"], ["--n", "21"], ["--seed", "1"]],
                         ids=["steps", "eps", "n", "seed"])
def test_a_changed_setting_or_image_set_misses_the_record(change, lenet_mnist, cache, tmp_path, capsys):
    _, _, path = lenet_mnist
    assert evaluate(path, tmp_path, "a") == 0
    assert evaluate(path, tmp_path, "b", *change) == 0  # argparse keeps the last of a repeated option
    assert "reusing" not in capsys.readouterr().out
    assert len(RecordStore(cache / "records.sqlite")) == 2


def test_a_changed_checkpoint_misses_the_record(lenet_mnist, cache, tmp_path, capsys):
    from advlab.models import load_checkpoint, save_checkpoint

    _, _, path = lenet_mnist
    model, meta = load_checkpoint(path)
    copy = tmp_path / "copy.safetensors"
    save_checkpoint(copy, model, {k: v for k, v in meta.items() if k != "advlab_version"})
    assert evaluate(copy, tmp_path, "a") == 0
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    save_checkpoint(copy, model, {k: v for k, v in meta.items() if k != "advlab_version"})  # same path, new weights
    assert evaluate(copy, tmp_path, "b") == 0
    assert "reusing" not in capsys.readouterr().out
    records = RecordStore(cache / "records.sqlite").all()
    assert len(records) == 2 and records[0].model_hash != records[1].model_hash


def test_record_keys_cover_model_protocol_settings_and_data():
    base = record_key("m", "classic", {"eps": [0.3]}, "d")
    assert base == record_key("m", "classic", {"eps": [0.3]}, "d")
    others = {record_key("m2", "classic", {"eps": [0.3]}, "d"), record_key("m", "standard", {"eps": [0.3]}, "d"),
              record_key("m", "classic", {"eps": [0.31]}, "d"), record_key("m", "classic", {"eps": [0.3]}, "d2")}
    assert base not in others and len(others) == 4
    x = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    assert data_sha256(x, torch.tensor([0, 1])) != data_sha256(x, torch.tensor([1, 0]))


def _write_many(path: str, worker: int, count: int) -> None:
    store = RecordStore(path)
    for i in range(count):
        store.put(Record(f"{worker}-{i}", "m", "classic", {"i": i}, "d", {"label": f"w{worker}"},
                         {"worst_case": [i / count], "eps": [0.3], "clean_accuracy": 1.0}, time.time()))


def test_concurrent_writers_from_several_processes_all_land(tmp_path):
    path = str(tmp_path / "records.sqlite")
    RecordStore(path)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_many, args=(path, w, 25)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(120)
    assert [p.exitcode for p in workers] == [0] * 4
    records = RecordStore(path).all()
    assert len(records) == 100 and {r.key for r in records} == {f"{w}-{i}" for w in range(4) for i in range(25)}


WRITER = textwrap.dedent("""
    import hashlib, sys, time
    from advlab.evaluation.records import Record, RecordStore
    store = RecordStore(sys.argv[1])
    blob = "x" * 2_000_000  # a large record, so the kill lands inside a write
    i = 0
    while True:
        payload = blob + str(i)
        store.put(Record(f"k{i}", "m", "classic", {"i": i}, "d", {}, {"blob": payload,
                  "sha": hashlib.sha256(payload.encode()).hexdigest()}, time.time()))
        print(i, flush=True)
        i += 1
""")


def test_a_writer_killed_mid_write_leaves_a_readable_consistent_database(tmp_path):
    path = tmp_path / "records.sqlite"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        for _ in range(3):  # at least three records committed, the kill comes in the middle of the next ones
            assert proc.stdout.readline(), "the writer died before writing"
        time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    import hashlib

    records = RecordStore(path).all()
    assert len(records) >= 3
    for r in records:  # every record is whole: nothing half-written is visible
        assert hashlib.sha256(r.result["blob"].encode()).hexdigest() == r.result["sha"]
    _write_many(str(path), 9, 2)  # and the database takes new writes
    assert len(RecordStore(path).all()) == len(records) + 2


def test_leaderboard_renders_evaluations_and_certificates(lenet_mnist, cache, tmp_path, capsys):
    _, _, path = lenet_mnist
    assert evaluate(path, tmp_path, "a") == 0
    assert main(["certify", str(path), "--sigma", "0.25", "--n0", "10", "--n", "100", "--n-images", "3",
                 "--out", str(tmp_path / "cert"), "--no-progress"]) == 0
    capsys.readouterr()
    out = tmp_path / "board"
    assert main(["leaderboard", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| model | recipe | training | protocol | images | clean |" in printed
    assert "Linf 0.1 (classic)" in printed and "certified L2 0.25 (sigma 0.25)" in printed
    page = (out / "leaderboard.html").read_text()
    assert "<script>" in page and "http" not in page.split("<script>")[1]  # nothing fetched
    table = json.loads((out / "leaderboard.json").read_text())
    assert {row[3] for row in table["rows"]} == {"classic", "certify"}
    assert (out / "report.html").is_file()
    assert main(["leaderboard", "--protocol", "certify", "--sort", "clean", "--ascending",
                 "--out", str(tmp_path / "b2")]) == 0
    assert "classic" not in capsys.readouterr().out.split("sorted by")[0]


def test_sort_orders_numbers_and_puts_missing_values_last():
    def rec(key, acc):
        return Record(key, key, "classic", {"dataset": "mnist"}, "d", {"label": key},
                      {"eps": [0.3], "worst_case": [acc], "clean_accuracy": 0.99, "n": 10, "diagnostics": []}, 0.0)

    other = Record("c", "c", "certify", {"sigma": 0.25}, "d", {"label": "c"},
                   {"certified_accuracy": {"0.5": 0.4}, "clean_accuracy_of_g": 0.9}, 0.0)
    table = leaderboard_table([rec("a", 0.2), rec("b", 0.7), other])
    down = sort_table(table, "Linf 0.3 (classic)")
    assert [r[0] for r in down["rows"]] == ["b", "a", "c"]  # labels stand in for sources here
    up = sort_table(table, "linf 0.3 (CLASSIC)", descending=False)
    assert [r[0] for r in up["rows"]] == ["a", "b", "c"]


@pytest.mark.parametrize("argv, needle", [
    (["leaderboard", "--sort", "nonsense"], "unknown --sort column"),
])
def test_leaderboard_bad_input_is_one_line(argv, needle, lenet_mnist, cache, tmp_path, capsys):
    _, _, path = lenet_mnist
    assert evaluate(path, tmp_path, "a") == 0
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "board")]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "board").exists()


def test_a_corrupt_records_file_is_one_line_and_left_alone(cache, tmp_path, capsys):
    cache.mkdir(parents=True)
    junk = cache / "records.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    assert main(["leaderboard", "--out", str(tmp_path / "board")]) == 2
    err = capsys.readouterr().err.strip()
    assert "records.sqlite" in err and "\n" not in err
    assert junk.read_bytes() == b"not a database at all" * 100  # never deleted or overwritten


def test_an_empty_leaderboard_says_so(cache, capsys):
    assert main(["leaderboard"]) == 0
    assert "no recorded evaluations" in capsys.readouterr().out


def test_recorded_computes_once(tmp_path):
    store = RecordStore(tmp_path / "r.sqlite")
    calls = []

    def compute():
        calls.append(1)
        return {"value": len(calls)}

    first, reused = recorded(store, "m", "p", {"a": 1}, "d", {}, compute)
    again, reused_again = recorded(store, "m", "p", {"a": 1}, "d", {}, compute)
    forced, _ = recorded(store, "m", "p", {"a": 1}, "d", {}, compute, force=True)
    assert (reused, reused_again) == (False, True) and again.result == {"value": 1} and forced.result == {"value": 2}
    assert file_sha256(tmp_path / "r.sqlite")  # hashing a file works on any path
