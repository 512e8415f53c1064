"""Report sections and terminal tables of `advlab evaluate`: one section per evaluated model (classic
protocol or suite) and the comparison of several."""

from __future__ import annotations

import json
from pathlib import Path

from advlab.errors import AdvlabError
from advlab.evaluation.defense import DefenseEvaluation, summary_rows
from advlab.evaluation.suite import SuiteEvaluation, compare_runs
from advlab.report.attack_figures import robust_curve_figure
from advlab.report.run import RunDir, load_run


def add_model_section(run_dir: RunDir, key: str, label: str, ev: DefenseEvaluation) -> None:
    r = ev.robust
    rows = {name: r.accuracy[k] for k, name in ev.attacks.items()} | {"worst case": r.worst_case()}
    clean_point = r.eps[0] > 0  # start every curve at eps 0 (clean accuracy) unless the list has it
    eps = [0.0, *r.eps] if clean_point else r.eps
    curves = {name: (eps, [r.clean_accuracy, *acc] if clean_point else acc) for name, acc in rows.items()}
    fig = robust_curve_figure(curves, run_dir.figure_path(f"evaluate_{key}.png"), "linf",
                              f"{label}: robust accuracy ({r.n} test images)")
    fired = [d for d in ev.diagnostics if d.fired]
    verdict = (f"Gradient masking suspected ({len(fired)} of {len(ev.diagnostics)} checks fired): "
               + " ".join(f"[{d.name}] {d.message}" for d in fired)) if fired else \
        "No sign of gradient masking: " + " ".join(d.message for d in ev.diagnostics)
    run_dir.add_section(f"Robustness of {label}",
                        f"Clean accuracy {r.clean_accuracy:.4f} on {r.n} test images. {verdict}",
                        table={"columns": ["eps", *ev.attacks.values(), "worst case"], "rows": summary_rows(ev)},
                        figures=[(fig.name, "robust accuracy against L-inf eps, one curve per attack, and the "
                                  "per-sample worst case")], key=f"evaluate_{key}")


COMPARISON_TEXT = ("Clean accuracy and worst-case robust accuracy (FGSM, PGD on the cross-entropy and on the C&W "
                   "margin, per sample) of each model at each eps, and whether any gradient-masking check fired.")


def add_comparison(run_dir: RunDir, results: dict, title: str = "Comparison", text: str = COMPARISON_TEXT,
                   key: str = "evaluate_comparison", first: bool = True) -> None:
    """The comparison table and figure of several evaluations, as the report's first section (or last)."""
    eps = next(iter(results.values()))["eps"]
    rows = [[r["label"], r["clean_accuracy"], *r["worst_case"], "yes" if r["masking_suspected"] else "no"]
            for r in results.values()]
    curves = {r["label"]: ([0.0, *eps], [r["clean_accuracy"], *r["worst_case"]]) for r in results.values()}
    fig = robust_curve_figure(curves, run_dir.figure_path(f"{key}.png"), "linf", "worst-case robust accuracy per model")
    section = {"title": title, "key": key, "text": text,
               "table": {"columns": ["model", "clean", *[f"eps {e:g}" for e in eps], "masking suspected"],
                         "rows": rows},
               "figures": [{"file": fig.name, "caption": "worst-case robust accuracy against L-inf eps"}]}
    run_dir.sections.insert(0 if first else len(run_dir.sections), section)


def suite_rows(ev: SuiteEvaluation) -> list[list]:
    """Table rows: eps, robust accuracy after each member (cumulative), then the worst case."""
    worst = ev.worst_case()
    return [[e, *[ev.accuracy_after[m][i] for m in ev.members], worst[i]] for i, e in enumerate(ev.eps)]


def add_suite_section(run_dir: RunDir, key: str, label: str, ev: SuiteEvaluation) -> None:
    clean_point = [0.0, *ev.eps]
    curves = {f"after {m}": (clean_point, [ev.clean_accuracy, *acc]) for m, acc in ev.accuracy_after.items()}
    fig = robust_curve_figure(curves, run_dir.figure_path(f"evaluate_{key}.png"), ev.norm,
                              f"{label}: robust accuracy, {ev.suite} suite ({ev.n} test images)")
    fired = [d for d in ev.diagnostics if d.fired]
    verdict = (f"Gradient masking suspected ({len(fired)} of {len(ev.diagnostics)} checks fired): "
               + " ".join(f"[{d.name}] {d.message}" for d in fired)) if fired else \
        "No sign of gradient masking: " + " ".join(d.message for d in ev.diagnostics)
    d = ev.to_dict()
    cost = "; ".join(f"{m}: {c['backward'] / ev.n:.1f} gradient calls and {c['queries'] / ev.n:.0f} queries per image"
                     for m, c in d["cost"].items())
    run_dir.add_section(f"Robustness of {label} ({ev.suite} suite, {ev.norm})",
                        f"Clean accuracy {ev.clean_accuracy:.4f} on {ev.n} test images. "
                        + " ".join(n[0].upper() + n[1:] + "." for n in ev.notes)
                        + f" Robust accuracy after each attack of the ensemble, each run on the samples the earlier "
                        f"ones left. Cost: {cost}. {verdict}",
                        table={"columns": ["eps", *[f"after {m}" for m in ev.members], "worst case"],
                               "rows": suite_rows(ev)},
                        figures=[(fig.name, f"robust accuracy against {ev.norm} eps after each attack of the "
                                  "ensemble")],
                        key=f"evaluate_{key}")


def suite_table_text(label: str, ev: SuiteEvaluation) -> str:
    """The suite's table, its notes, costs and diagnostics as terminal text."""
    lines = []
    names = [f"after {m}" for m in ev.members] + ["worst case"]
    lines.append(f"{label}: clean accuracy {ev.clean_accuracy:.4f} on {ev.n} images ({ev.suite} suite, {ev.norm})")
    for note in ev.notes:
        lines.append(f"  note: {note}")
    lines.append("  eps    " + "  ".join(f"{n[:16]:>16}" for n in names))
    for row in suite_rows(ev):
        lines.append(f"  {row[0]:<6g} " + "  ".join(f"{v:>16.4f}" for v in row[1:]))
    for m, c in ev.to_dict()["cost"].items():
        lines.append(f"  {m}: {c['backward'] / ev.n:.1f} gradient calls, {c['queries'] / ev.n:.0f} queries per image")
    for d in ev.diagnostics:
        lines.append(f"  [{'FIRED' if d.fired else 'ok'}] {d.name}: {d.message}")
    return "\n".join(lines)


def defense_table_text(label: str, ev: DefenseEvaluation) -> str:
    """The classic evaluation's table and diagnostics as terminal text."""
    lines = []
    r = ev.robust
    names = list(ev.attacks.values()) + ["worst case"]
    lines.append(f"{label}: clean accuracy {r.clean_accuracy:.4f} on {r.n} images")
    lines.append("  eps    " + "  ".join(f"{n[:28]:>28}" for n in names))
    for row in summary_rows(ev):
        lines.append(f"  {row[0]:<6g} " + "  ".join(f"{v:>28.4f}" for v in row[1:]))
    for d in ev.diagnostics:
        lines.append(f"  [{'FIRED' if d.fired else 'ok'}] {d.name}: {d.message}")
    return "\n".join(lines)


def add_evaluation_section(run_dir: RunDir, key: str, label: str, ev: DefenseEvaluation | SuiteEvaluation) -> str:
    """The section of one evaluated model (classic or suite); returns its table as terminal text."""
    if isinstance(ev, SuiteEvaluation):
        add_suite_section(run_dir, key, label, ev)
        return suite_table_text(label, ev)
    add_model_section(run_dir, key, label, ev)
    return defense_table_text(label, ev)


def compare_run_folders(run_a: str | Path, run_b: str | Path) -> str:
    """The samples one standard/rand evaluation broke and the other did not (first model of each run
    folder), as text."""
    records = []
    for path in (run_a, run_b):
        load_run(path)  # a clear error if it is not a run folder
        try:
            records.append(json.loads((Path(path) / "samples_0.json").read_text()))
        except FileNotFoundError:
            raise AdvlabError(f"{path} has no per-sample records (samples_0.json); it was not an evaluation with "
                              "--suite standard or rand") from None
        except json.JSONDecodeError as exc:
            raise AdvlabError(f"{path}/samples_0.json is corrupt ({exc.msg})") from None
    diff = compare_runs(records[0], records[1])
    lines = []
    for name, key, other in ((run_a, "only_a", records[0]), (run_b, "only_b", records[1])):
        idx = diff[key]
        by = ", ".join(f"{i} ({other[i]['broken_by']}, step {other[i]['step']})" for i in idx[:50])
        lines.append(f"broken only by {name}: {len(idx)} of {diff['n']}" + (f": {by}" if idx else ""))
    return "\n".join(lines)
