"""Runs, data and caches: the model cache keys on the data read, run folders never replace what
advlab did not write, killed runs resume to the same result, destinations are checked before work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from advlab.cli.main import main
from advlab.data import CANONICAL_FINGERPRINTS, ImageDataset, load_dataset
from advlab.errors import AdvlabError
from advlab.report.run import RunDir, remove_dead_partials
from advlab.training import cached_checkpoint_path, default_config, train_model
from advlab.training.cache import data_identity
from advlab.training.trainer import TrainConfig, make_optimizer, make_schedule

CPU = torch.device("cpu")


def make_folder(root: Path, per_class: int = 12, size: int = 16, seed: int = 0) -> Path:
    """Two classes of grey images a linear model tells apart (dark and bright), with noise."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(("dark", "bright")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            level = 60 + 120 * label
            pixels = np.clip(rng.normal(level, 25, (size, size)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "L").save(root / name / f"{i:03d}.png")
    return root


def folder_config(folder: Path, **overrides) -> TrainConfig:
    fields = {"model": "mlp", "epochs": 1, "batch_size": 8, "optimizer": "adam", "lr": 1e-3, "augment": False,
              "schedule": "constant", **overrides}
    return default_config(f"folder:{folder}", **fields)


def folder_data(folder: Path, size: int = 16, channels: int = 1):
    name = f"folder:{folder}"
    return (load_dataset(name, "train", image_size=size, channels=channels),
            load_dataset(name, "test", image_size=size, channels=channels))


def run_cli(*argv):
    return main([str(a) for a in argv])


# -- the cache key covers the data -------------------------------------------------------------------------


def test_canonical_mnist_keeps_its_key_from_any_copy(mnist_train, mnist_test):
    from advlab.data.mnist import load_mnist

    assert mnist_train.fingerprint == CANONICAL_FINGERPRINTS["mnist-train"]
    assert data_identity(mnist_train, mnist_test) is None  # keys made before data entered them stay valid
    embedded = load_mnist("test")  # the copy inside the package; the fixtures read ADVLAB_DATA's
    assert embedded.meta["source"] == "embedded" and embedded.fingerprint == mnist_test.fingerprint


def test_shifted_labels_are_other_data_with_another_key(mnist_train, mnist_test):
    config = default_config("mnist", model="linear", epochs=1)
    shifted = ImageDataset(mnist_train.images, (mnist_train.labels + 1) % 10, mnist_train.classes, "mnist-train",
                           dict(mnist_train.meta))
    assert shifted.fingerprint != mnist_train.fingerprint
    assert data_identity(shifted, mnist_test) == {"train": shifted.fingerprint, "test": mnist_test.fingerprint}
    assert (cached_checkpoint_path(config, shifted, mnist_test)
            != cached_checkpoint_path(config, mnist_train, mnist_test))


def test_folder_changes_change_the_key_and_are_never_served_stale(tmp_path):
    folder = make_folder(tmp_path / "pets")
    config = folder_config(folder)
    train, test = folder_data(folder)
    _, meta, first, cached = train_model(config, CPU, progress=False, train_data=train, test_data=test)
    assert not cached and meta["data"]["train"]["fingerprint"] == train.fingerprint
    assert train_model(config, CPU, progress=False, train_data=train, test_data=test)[3]  # same data: cached

    # swap the class folders' contents: same names, sizes and file count, other labels
    (folder / "dark").rename(folder / "tmp")
    (folder / "bright").rename(folder / "dark")
    (folder / "tmp").rename(folder / "bright")
    swapped_train, swapped_test = folder_data(folder)
    assert swapped_train.fingerprint != train.fingerprint
    _, _, second, cached = train_model(config, CPU, progress=False, train_data=swapped_train, test_data=swapped_test)
    assert not cached and second != first

    # another shape of the same files
    colour_train, colour_test = folder_data(folder, size=8, channels=3)
    assert colour_train.shape == (3, 8, 8)
    assert cached_checkpoint_path(config, colour_train, colour_test) not in (first, second)

    # a regenerated (e.g. re-poisoned) folder at the same path, one image rewritten with the same size
    image = folder / "dark" / "000.png"
    pixels = np.asarray(Image.open(image)).copy()
    pixels[:4, :4] = 255
    Image.fromarray(pixels, "L").save(image)
    regenerated, _ = folder_data(folder)
    assert regenerated.fingerprint != swapped_train.fingerprint


def test_cli_says_which_data_it_used(tmp_path, capsys):
    folder = make_folder(tmp_path / "pets")
    out = tmp_path / "run"
    assert run_cli("train", "--dataset", f"folder:{folder}", "--channels", 1, "--image-size", 16, "--model", "mlp",
                   "--epochs", 1, "--batch-size", 8, "--no-augment", "--no-progress", "--out", out) == 0
    printed = capsys.readouterr().out
    train, _ = folder_data(folder)
    assert f"fingerprint {train.fingerprint[:12]}" in printed and str(folder) in printed
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert config["data"]["train"]["fingerprint"] == metrics["data"]["train"]["fingerprint"] == train.fingerprint


def test_corrupt_cached_model_is_trained_again(tmp_path, capsys):
    folder = make_folder(tmp_path / "pets")
    config = folder_config(folder)
    train, test = folder_data(folder)
    model, _, path, _ = train_model(config, CPU, progress=False, train_data=train, test_data=test)
    path.write_bytes(b"not a safetensors file")
    again, _, path2, cached = train_model(config, CPU, progress=False, train_data=train, test_data=test)
    assert path2 == path and not cached
    assert "unreadable" in capsys.readouterr().err
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(),
                                                 strict=True))
    assert train_model(config, CPU, progress=False, train_data=train, test_data=test)[3]  # readable again


def test_architecture_too_big_for_the_images_is_refused_before_training(tmp_path):
    folder = make_folder(tmp_path / "pets", size=8)
    train, test = folder_data(folder, size=8)
    with pytest.raises(AdvlabError, match="lenet cannot take .* 1x8x8 images"):
        train_model(folder_config(folder, model="lenet"), CPU, progress=False, train_data=train, test_data=test)


# -- schedules of degenerate length --------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 8])
def test_onecycle_runs_at_any_length(steps):
    model = torch.nn.Linear(2, 2)
    config = TrainConfig(epochs=1, schedule="onecycle", lr=0.01)
    optimizer = make_optimizer(model, config)
    schedule = make_schedule(optimizer, config, steps)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert all(0 < r <= 0.01 + 1e-12 for r in rates)


def test_four_step_run_trains(mnist_train, mnist_test):
    """advlab train --train-subset 500: 500 images in batches of 128 are 4 steps (the one-cycle crash)."""
    config = default_config("mnist", model="linear", epochs=1, train_subset=500)
    assert config.steps(len(mnist_train)) == 4
    _, meta, _, _ = train_model(config, CPU, progress=False, train_data=mnist_train.head(2000),
                                test_data=mnist_test.head(200))
    assert len(meta["history"]) == 1


# -- run folders -----------------------------------------------------------------------------------------------


def test_out_is_never_replaced_unless_it_is_an_earlier_run_and_overwrite_is_given(tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "config.json").write_text('{"mine": true}')
    (precious / "notes.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        with pytest.raises(AdvlabError, match="precious"):
            RunDir(precious, "x", {}, overwrite=bool(extra))
    assert (precious / "notes.txt").read_text() == "keep me"

    run = RunDir(tmp_path / "run", "x", {"a": 1})
    run.commit()
    with pytest.raises(AdvlabError, match="already exists and is not empty.*--overwrite"):
        RunDir(tmp_path / "run", "x", {"a": 2})
    again = RunDir(tmp_path / "run", "x", {"a": 2}, overwrite=True)
    again.commit()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["a"] == 2
    (tmp_path / "run" / "my-notes.txt").write_text("added by hand")
    with pytest.raises(AdvlabError, match="my-notes.txt"):
        RunDir(tmp_path / "run", "x", {}, overwrite=True)
    assert not list(tmp_path.glob(".*partial*")) and not list(tmp_path.glob(".*replaced*"))


def test_default_run_folders_are_unique_within_a_second(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20260101-000000")
    runs = [RunDir(None, "train", {"i": i}) for i in range(3)]
    paths = [r.commit() for r in runs]
    assert len(set(paths)) == 3 and all(json.loads((p / "config.json").read_text())["i"] == i
                                        for i, p in enumerate(paths))


def test_default_run_folders_are_unique_across_processes(tmp_path):
    script = ("import time, sys; time.strftime = lambda *a: '20260101-000000'\n"
              "from advlab.report.run import RunDir\n"
              "sys.stdin.readline()\n"  # all processes commit at the same moment
              "print(RunDir(None, 'train', {}).commit())\n")
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=os.environ.copy()) for _ in range(2)]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outs)) == 2 and len(list((tmp_path / "runs").iterdir())) == 2


def test_partial_folders_of_dead_runs_are_removed_and_only_those(tmp_path):
    script = ("import sys, time\nfrom advlab.report.run import RunDir\n"
              f"run = RunDir({str(tmp_path / 'killed')!r}, 'train', {{}})\n"
              "print(run.tmp, flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    dead = Path(proc.stdout.readline().strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert dead.is_dir()
    foreign = tmp_path / ".mine.partial-keep"  # looks like ours but has no lock: not advlab's to remove
    foreign.mkdir()
    live = RunDir(tmp_path / "live", "train", {})  # a new run in the same folder clears the dead one's
    assert not dead.exists() and not Path(f"{dead}.lock").exists() and foreign.is_dir()
    assert remove_dead_partials(tmp_path) == [] and live.tmp.is_dir()  # held by this live process
    live.discard()
    assert not live.tmp.exists()


# -- hostile options: one line, exit 2, before any work ----------------------------------------------------


@pytest.mark.parametrize("argv,message", [
    (["train", "--model", "conv_vae"], "conv_vae is an autoencoder, not a classifier"),
    (["train", "--weight-decay", "nan"], "not a finite number"),
    (["train", "--lr", "inf"], "not a finite number"),
    (["train", "--seed", "-1"], "expected a seed"),
    (["train", "--image-size", "0"], "expected a positive integer"),
    (["train", "--image-size", "-3"], "expected a positive integer"),
    (["train", "--image-size", "100000"], "at most 1024"),
    (["train", "--checkpoint", "MISSING/m.safetensors"], "that folder does not exist"),
    (["train", "--checkpoint", "FOLDER.safetensors"], "is a folder"),
    (["train", "--checkpoint", "FILE/m.safetensors"], "is a file"),
    (["train", "--checkpoint", "EXISTING.safetensors"], "already exists"),
    (["train", "--out", "FILE/run"], "is a file, not a folder"),
    (["train", "--out", "FILE"], "is a file"),
    (["attack", "--model", "lenet", "--json", "FOLDER.safetensors"], "is a folder"),
    (["evaluate", "lenet", "--json", "FILE/x.json"], "is a file"),
    (["train", "--data-dir", "MISSING"], "does not exist"),
    (["train", "--data-dir", "FILE"], "is a file, not a folder"),
    (["certify", "x.safetensors", "--seed", "-1"], "expected a seed"),
    (["defend", "--method", "fast", "--weight-decay", "-1"], "expected a number in [0, inf]"),
    (["backdoor", "--save-poisoned", "FOLDER.safetensors"], "already exists; choose a new folder"),
    (["backdoor", "--save-poisoned", "FILE/poisoned"], "is a file, not a folder"),
    (["backdoor", "--seed", "-5"], "expected a seed"),
    (["autoencoder-attack", "--penalty", "nan"], "not a finite number"),
])
def test_hostile_options_fail_in_one_line_before_any_work(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("a file")
    (tmp_path / "FOLDER.safetensors").mkdir()
    (tmp_path / "EXISTING.safetensors").write_text("someone's file")
    try:
        code = run_cli(*argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "data:" not in out  # refused before any data was read
    assert not (tmp_path / "runs").exists() and (tmp_path / "EXISTING.safetensors").read_text() == "someone's file"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_out_in_proc_is_refused_before_work(tmp_path, capsys):
    assert run_cli("train", "--out", "/proc/advlab-run") == 2
    assert "cannot be written" in capsys.readouterr().err


def test_ctrl_c_during_start_up_is_one_line(monkeypatch, capsys):
    import advlab.cli.main as entry

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(entry, "build_parser", interrupted)
    assert entry.main(["train"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "advlab: interrupted"


# -- killed runs resume to the same result -----------------------------------------------------------------


def _env(cache: Path) -> dict:
    return {**os.environ, "ADVLAB_CACHE": str(cache), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture
def one_thread():
    """The killed subprocess runs on one thread; in-process runs compared with it do too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _in_process(argv: list, cache: Path, monkeypatch, capsys) -> str:
    """Run advlab in this process with its own cache; return what it printed."""
    monkeypatch.setenv("ADVLAB_CACHE", str(cache))
    capsys.readouterr()
    code = run_cli(*argv)
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    return out + err


def _kill_when(argv: list, cache: Path, cwd: Path, ready) -> None:
    """Start advlab in a subprocess, SIGKILL it as soon as ready() holds (polled), and check that it was
    killed mid-run, not finished."""
    proc = subprocess.Popen([sys.executable, "-m", "advlab", *map(str, argv)], cwd=cwd, env=_env(cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {err[-500:]}"


TRAIN_ARGS = ["--channels", "1", "--image-size", "28", "--model", "lenet", "--epochs", "4", "--batch-size", "8",
              "--no-augment", "--optimizer", "sgd", "--lr", "0.05", "--no-progress"]
FAST_CARRIED = ["defend", "--method", "fast", "--fgsm-start", "carry", "--eps", "0.1"]


@pytest.mark.parametrize("command", [["train"], FAST_CARRIED], ids=["train", "fast-carried"])
def test_killed_training_resumes_to_the_same_weights(command, tmp_path, monkeypatch, capsys, one_thread):
    folder = make_folder(tmp_path / "pets", per_class=40, size=28)
    argv = [*command, "--dataset", f"folder:{folder}", *TRAIN_ARGS]
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    states = cache / "models"
    _kill_when([*argv, "--out", tmp_path / "run"], cache, tmp_path,
               lambda: states.is_dir() and any(states.glob("*.state.safetensors")))
    assert not (tmp_path / "run").exists() and list(tmp_path.glob(".run.partial-*"))  # what the kill left

    printed = _in_process([*argv, "--out", tmp_path / "run"], cache, monkeypatch, capsys)  # the same command again
    assert "resuming from epoch" in printed
    assert not list(tmp_path.glob(".run.partial-*"))  # the dead run's partial folder is gone
    assert not list(states.glob("*.state.safetensors"))  # and the state, once the model is cached
    _in_process([*argv, "--out", tmp_path / "whole"], tmp_path / "cache-whole", monkeypatch, capsys)

    a, b = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("whole", "run"))
    assert 1 <= b["resumed_after_epoch"] < 4 and a["resumed_after_epoch"] is None
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    assert a["test_accuracy"] == b["test_accuracy"]
    wa, wb = load_file(a["checkpoint"]), load_file(b["checkpoint"])
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_killed_certification_resumes_from_the_images_done(tmp_path, monkeypatch, capsys, one_thread):
    from advlab.defenses.noise import noise_config, train_noise_model

    folder = make_folder(tmp_path / "pets", per_class=20, size=28)
    train, test = folder_data(folder, size=28)
    config = noise_config(f"folder:{folder}", 0.25, model="lenet", epochs=1, batch_size=8, augment=False)
    _, _, path, _ = train_noise_model(config, CPU, progress=False, train_data=train, test_data=test)
    argv = ["certify", path, "--dataset", f"folder:{folder}", "--channels", 1, "--image-size", 28, "--n-images", 6,
            "--n0", 50, "--n", 6000, "--batch-size", 1000, "--no-progress"]
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"

    def two_done() -> bool:
        found = list((cache / "certify").glob("*.jsonl")) if (cache / "certify").is_dir() else []
        return bool(found) and found[0].read_text().count("\n") >= 3  # the header and two images

    _kill_when([*argv, "--out", tmp_path / "run"], cache, tmp_path, two_done)
    printed = _in_process([*argv, "--out", tmp_path / "run"], cache, monkeypatch, capsys)
    assert "resuming certification:" in printed
    assert not list((cache / "certify").glob("*.jsonl"))
    _in_process([*argv, "--out", tmp_path / "whole"], tmp_path / "cache-whole", monkeypatch, capsys)
    a, b = (json.loads((tmp_path / name / "metrics.json").read_text())["records"] for name in ("whole", "run"))
    assert len(a) == 6 and [{k: v for k, v in r.items() if k != "seconds"} for r in a] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in b]
