"""The report of `advlab audit` (advlab.detection.audit.audit_folder): suspicious.csv, the PCA figure
of each class with the files kept and flagged, and the before-and-after table."""

from __future__ import annotations

import csv

from advlab.detection.audit import FolderAudit
from advlab.report.backdoor_figures import projection_figure
from advlab.report.run import RunDir

MAX_FIGURES = 12  # classes drawn, those with the most suspicious files first


def add_audit_sections(run_dir: RunDir, found: FolderAudit, method: str) -> list[dict]:
    """Write suspicious.csv, the metrics and the sections into run_dir; returns the suspicious files."""
    audit = found.audit
    suspicious = audit.suspicious()
    with open(run_dir.tmp / "suspicious.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "class", "score", "rank_in_class"])
        writer.writerows([s["file"], s["class"], f"{s['score']:.6g}", s["rank_in_class"]] for s in suspicious)
    run_dir.metrics = found.to_dict()
    figures = []
    classes = sorted(audit.projections, key=lambda c: (-int(audit.removed[audit.labels == c].sum()), c))
    for c in classes[:MAX_FIGURES]:
        flagged = audit.removed[audit.labels == c]
        name = f"pca_class_{c}.png"
        projection_figure(audit.projections[c], None, flagged, run_dir.figure_path(name),
                          f"class {audit.classes[c]}: top-6 PCA of the {audit.layer_description}",
                          names=("kept", "suspicious"))
        figures.append((name, f"class {audit.classes[c]}: {int(flagged.sum())} of {len(flagged)} suspicious"))
    rows = [[s["file"], s["class"], round(s["score"], 4)] for s in suspicious[:50]]
    run_dir.add_section("Audit", f"{method} on {found.model_source}, {audit.layer_description}: "
                        f"{len(suspicious)} of {len(audit.files)} files suspicious (all in suspicious.csv).",
                        table={"columns": ["file", "class", "score"], "rows": rows}, figures=figures)
    if found.before:
        table_rows = [["before", *(found.before.get(k, "") for k in ("clean_accuracy", "attack_success"))]]
        if found.after:
            table_rows.append(["retrained without them",
                               *(found.after.get(k, "") for k in ("clean_accuracy", "attack_success"))])
        run_dir.add_section("Before and after", f"target class: {found.target}" if found.target else "",
                            table={"columns": ["model", "clean accuracy", "attack success"], "rows": table_rows})
    return suspicious
