"""advlab report on hostile run folders (issue 17): only files inside the run folder are embedded, and
report files of the wrong shape are refused in one line (exit 2)."""

from __future__ import annotations

import json
import os

import pytest

from advlab.cli.main import main

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def make_run(root, sections=None, config=None, metrics=None):
    run = root / "run"
    (run / "figures").mkdir(parents=True)
    (run / "figures" / "ok.png").write_bytes(PNG)
    (run / "config.json").write_text(json.dumps({"command": "attack"} if config is None else config))
    (run / "metrics.json").write_text(json.dumps({} if metrics is None else metrics))
    sections = [{"title": "A", "text": "x", "figures": [{"file": "ok.png", "caption": "c"}]}] if sections is None \
        else sections
    text = sections if isinstance(sections, str) else json.dumps({"sections": sections})
    (run / "report.json").write_text(text)
    return run


def report(run, capsys) -> tuple[int, str]:
    code = main(["report", str(run)])
    return code, capsys.readouterr().err.strip()


def test_a_good_run_renders(tmp_path, capsys):
    run = make_run(tmp_path)
    assert report(run, capsys)[0] == 0 and "base64," in (run / "report.html").read_text()


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "../config.json/../../x", ""])
def test_figures_outside_the_run_folder_are_refused(tmp_path, capsys, name):
    run = make_run(tmp_path, sections=[{"title": "A", "figures": [{"file": name, "caption": ""}]}])
    code, err = report(run, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "figure" in err, err
    assert not (run / "report.html").exists()


def test_a_symlink_leading_out_is_refused_and_one_inside_is_kept(tmp_path, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not embed")
    run = make_run(tmp_path, sections=[{"title": "A", "figures": [{"file": "leak.png", "caption": ""}]}])
    os.symlink(secret, run / "figures" / "leak.png")
    code, err = report(run, capsys)
    assert code == 2 and "leading out of the run folder" in err
    os.symlink(run / "figures" / "ok.png", run / "figures" / "inside.png")
    (run / "report.json").write_text(json.dumps({"sections": [{"title": "A", "figures": [{"file": "inside.png"}]}]}))
    assert report(run, capsys)[0] == 0


BAD_SHAPES = {
    "config a list": ({"config": [1, 2]}, "config.json must hold a JSON object"),
    "metrics a string": ({"metrics": "x"}, "metrics.json must hold a JSON object"),
    "report a list": ({"sections": "[1]"}, "report.json must hold a JSON object"),
    "sections not a list": ({"sections": '{"sections": 5}'}, "'sections' must be a list"),
    "section not an object": ({"sections": [3]}, "section 0 must be an object"),
    "section without title": ({"sections": [{"text": "x"}]}, "needs a string 'title'"),
    "text not a string": ({"sections": [{"title": "A", "text": 5}]}, "'text' must be a string"),
    "table without columns": ({"sections": [{"title": "A", "table": {"rows": [[1]]}}]}, "non-empty 'columns'"),
    "table rows of the wrong width": ({"sections": [{"title": "A", "table": {"columns": ["a", "b"], "rows": [[1]]}}]},
                                      "rows of 2 cells"),
    "figures not a list": ({"sections": [{"title": "A", "figures": "ok.png"}]}, "'figures' must be a list"),
}


@pytest.mark.parametrize("case", sorted(BAD_SHAPES))
def test_report_files_of_the_wrong_shape_are_refused_in_one_line(tmp_path, capsys, case):
    kwargs, message = BAD_SHAPES[case]
    code, err = report(make_run(tmp_path, **kwargs), capsys)
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
