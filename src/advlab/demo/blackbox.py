"""The demo's section: a Square Attack through an in-process oracle."""

from __future__ import annotations

from advlab.attacks.blackbox import LocalOracle, Square
from advlab.report.blackbox_figures import success_vs_queries_figure

DEMO_ORDER = 40


def demo_section(ctx) -> None:
    """A small Square Attack against an in-process oracle of the demo model."""
    n, queries = (4, 300) if ctx.quick else (16, 2000)
    x, y = ctx.test_data.tensors(n)
    oracle = LocalOracle(ctx.model, input_shape=ctx.test_data.shape)
    result = Square(eps=0.3, max_queries=queries, p_init=0.3)(oracle, x.to(ctx.device), y.to(ctx.device))
    ok = result.clean_correct.cpu()
    q = result.extra["queries_at_success"][ok & result.success.cpu()]
    rate = float((result.success.cpu() & ok).sum() / max(int(ok.sum()), 1))
    med = float(q.float().median()) if len(q) else float("nan")
    fig = success_vs_queries_figure({"square": result.extra["queries_at_success"][ok].numpy()}, queries,
                                    ctx.run.figure_path("blackbox_square.png"), "Square Attack, Linf eps 0.3")
    ctx.run.add_section("Black-box: Square Attack", f"Square Attack (Andriushchenko et al. 2020) through an "
                        f"in-process probability oracle on {n} test images, Linf eps 0.3, at most {queries} queries "
                        f"per image: success {rate:.2f} on the {int(ok.sum())} correctly classified, median "
                        f"{med:.0f} queries ({result.cost.queries} queries in all). Run `advlab serve` and "
                        "`advlab blackbox --oracle URL` for the same attack over HTTP.",
                        figures=[(fig.name, "success rate against the query budget")], key="blackbox")
    ctx.run.metrics["blackbox"] = {"success_rate": rate, "median_queries": med, "queries": result.cost.queries}
