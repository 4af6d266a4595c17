"""The run's report: report.json (a dict), report.md, weight_errors.png and the console summary.

Everything is derived from the report dict that :func:`build_report` makes, so the markdown
table and the console summary always show the same figures (:func:`headline`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from solver import Status

from .construct import peak_rss_mb
from .domain import InputDomain
from .local import summary as local_summary
from .network import PrunedNetwork

if TYPE_CHECKING:
    from .verify import Verification


def _count_statuses(c: PrunedNetwork) -> dict[str, int]:
    total = {s.name.lower(): 0 for s in Status}
    for s in c.solutions:
        for k, v in s.status_counts.items():
            total[k] += v
    return total


def layer_rows(c: PrunedNetwork) -> list[dict[str, Any]]:
    rows = []
    for layer, spec, sol in zip(c.layers, c.specs, c.solutions):
        worst, mean = sol.error_summary()
        rows.append({
            "layer": spec.name, "kind": spec.kind, "shape": list(layer.weight.shape),
            "bias": spec.has_bias, "folded_bn": layer.folded_bn, "input_nonneg": spec.input_nonneg,
            "weights": layer.num_params(), "n": spec.n, "problems": sol.problems,
            "random_params": spec.dense_params(), "random_params_fanout": spec.fanout_params(),
            "kept_params": sol.kept(), "scale": spec.scale,
            "max_weight_error": worst, "mean_weight_error": mean,
            "status_counts": sol.status_counts, "presolved": sol.presolved, "seconds": sol.seconds, "backend": sol.backend,
            "n_search": sol.n_search,
        })
    return rows


def unconstructed(c: PrunedNetwork) -> list[str]:
    """Target parameters the pruned network uses as they are (not replaced by a random pair nor
    folded into one): their names. Every parametrised op the tracer accepts is constructed, so this
    is empty unless a future op keeps its parameters."""
    owners = {layer.folded_bn for layer in c.layers if layer.folded_bn}
    covered = {name for layer in c.layers for name in layer.sources}
    return [name for name, _ in c.target.named_parameters()
            if name not in covered and name.rsplit(".", 1)[0] not in owners]


def theorem_n(c: PrunedNetwork) -> dict[str, Any] | None:
    """The theorem's n = O(log2(d l / eps)) for this target, to read beside each layer's n: d the
    largest fan-in (d_in x kernel taps) or fan-out of any layer, l the number of layers."""
    if c.options.eps is None or c.options.eps <= 0:
        return None
    d = max(max(s.in_group * s.kernel[0] * s.kernel[1], s.d_out) for s in c.specs)
    depth = len(c.specs)
    return {"d": d, "l": depth, "eps": c.options.eps, "log2_d_l_over_eps": float(np.log2(d * depth / c.options.eps))}


WORST_SHOWN = 5


def eps_coverage(c: PrunedNetwork) -> dict[str, Any]:
    """How many target weights and biases are within eps of what the pruned pair computes, and the
    worst that are not (layer, parameter, index, target value, error). Without eps: nulls."""
    eps = c.options.eps
    if eps is None:
        return {"weights_within_eps": None, "weights_missing_eps": None, "worst_missing": []}
    within = missing = 0
    worst: list[dict[str, Any]] = []
    for layer, sol in zip(c.layers, c.solutions):
        params = [("weight", layer.weight, sol.weight_error)]
        if sol.bias_error is not None:
            params.append(("bias", layer.bias, sol.bias_error))
        for name, values, errors in params:
            errors = np.asarray(errors).reshape(values.shape)
            miss = errors > eps
            missing += int(miss.sum())
            within += int((~miss).sum())
            for idx in np.argwhere(miss):
                worst.append({"layer": layer.name, "param": name, "index": [int(i) for i in idx],
                              "target": float(values[tuple(idx)]), "error": float(errors[tuple(idx)])})
            worst = sorted(worst, key=lambda w: -w["error"])[:WORST_SHOWN]
    return {"weights_within_eps": within, "weights_missing_eps": missing, "worst_missing": worst}


def build_report(c: PrunedNetwork, check: Verification, *, target_desc: dict[str, Any], data_spec: str | None,
                 total_seconds: float) -> dict[str, Any]:
    rows = layer_rows(c)
    spare = unconstructed(c)
    counted = sum(r["weights"] for r in rows)
    report = {
        "target": target_desc,
        "target_params": sum(l.num_params() for l in c.layers),
        "unconstructed_params": len(spare),
        "unconstructed_param_names": spare,
        "random_params": sum(r["random_params"] for r in rows),
        "random_params_materialized": sum((r["random_params"] if c.variant == "dense" else r["random_params_fanout"]) for r in rows),
        "kept_params": sum(r["kept_params"] for r in rows),
        "max_weight_error": max(r["max_weight_error"] for r in rows),
        "mean_weight_error": sum(r["mean_weight_error"] * r["weights"] for r in rows) / counted,
        "max_output_error": check.max_output_error,
        "mean_output_error": check.mean_output_error,
        "certified_bound": check.certified_bound,
        "certified_bound_vacuous": check.vacuous,
        "output_range_observed": check.output_range_observed,
        "interval_bound": check.interval_bound,
        "adversarial_output_error": check.adversarial_output_error,
        "adversarial_search": check.adversarial,
        "bound_holds": check.bound_holds,
        "bound_method": check.bound_method,
        "certified_bound_reason": check.certified_bound_reason,
        "verified_on": check.inputs,
        "errors_measured_on": check.measured_on,
        "forms": check.forms,  # which form of the pruned network gave each figure
        "materialised_check": check.materialised,
        "local_certificates": _local_summary(check),
        **eps_coverage(c),
        "memory": dict(c.memory or {}, peak_rss_mb=peak_rss_mb()),
        "status_counts": _count_statuses(c),
        "presolved": sum(s.presolved for s in c.solutions),
        "seconds": {"solve": c.seconds["solve"], "assemble": c.seconds["assemble"], "verify": check.seconds,
                    "verify_phases": check.phase_seconds, "total": total_seconds},
        "backend": sorted({r["backend"] for r in rows}) if len({r["backend"] for r in rows}) > 1 else rows[0]["backend"],
        "n": c.options.n,
        "n_min": c.options.n_min if c.options.n == "auto" else None,
        "n_max": c.options.n_max if c.options.n == "auto" else None,
        "n_theorem": theorem_n(c),
        "objective": c.options.objective,
        "eps": c.options.eps,
        "seed": c.options.seed,
        "layout": c.options.layout,
        "variant": c.variant,
        "scale_policy": c.options.scale_policy,
        "scale_margin": c.options.margin,
        "input_shape": list(c.input_shape),
        "input_domain": c.domain.to_json(),
        "input_tokens": c.domain.tokens,  # the domain is a range of token ids
        "data": data_spec,
        "random_network": random_network_description(c),
        "layers": rows,
    }
    if check.accuracy is not None:
        report["accuracy"] = check.accuracy
    if check.agreement is not None:
        report["agreement"] = check.agreement
        report["near_ties"] = check.near_ties
    return report


def random_network_description(c: PrunedNetwork) -> dict[str, Any]:
    """The distributions and scale policy of the random network, as recorded in the report."""
    if c.options.layout == "paper":
        dist = "every entry of A and B (weights and biases) i.i.d. U[-1, 1]; 2n fan-out units per input"
        scale = "none (s = 1)"
    else:
        dist = ("A's kept entries |u| ~ U(0, 1], n positive units per input when the input is >= 0, else n "
                "positive and n negative; constant units' bias beta ~ U(0, 1]; B ~ U[-s, s]; all other "
                "entries U[-1, 1] and pruned")
        if c.options.layout == "balanced":
            dist += ("; |B| ~ U[0, s] with its sign set so that in every group of n units the products B u "
                     "(constant units: B relu(beta)) of the even-indexed units are positive and of the odd-indexed "
                     "negative: ceil(n/2) and floor(n/2)")
        what = "largest |weight or bias|" if c.options.scale_policy == "max" else "root mean square of its weights and biases"
        scale = f"s = {c.options.margin:g} x the layer's {what} (per-layer s in `layers`)"
    return {"layout": c.options.layout, "variant": c.variant, "distributions": dist, "scale_policy": scale,
            "seeds": "per layer: SeedSequence([seed, layer index]); per unit a stream seeded by (layer seed, group, "
                     "index in the group), so the values for n are a prefix of those for n + 1; float32 on the CPU"}


def _domain_words(r: dict[str, Any]) -> str:
    return InputDomain(*r["input_domain"], tokens=bool(r.get("input_tokens"))).describe()


def fmt(x: float | None) -> str:
    """Three significant digits; None (a figure not given, e.g. no certified bound) as "none"."""
    return "none" if x is None else f"{x:.3g}"


def _local_summary(check: Verification) -> dict[str, Any] | None:
    """The local certificates' figures without their per-input lists (the verification holds those)."""
    return local_summary(check.local_json())


def _whole_bound_words(r: dict[str, Any]) -> str:
    """The whole domain's bound, or "vacuous" where it exceeds the target's own output spread observed."""
    if not r.get("certified_bound_vacuous"):
        return fmt(r["certified_bound"])
    low, high = r["output_range_observed"]
    return (f"vacuous ({fmt(r['certified_bound'])}: more than the spread of the target's outputs observed, "
            f"{fmt(high - low)}; see the local certificates, --radius)")


def _local_rows(local: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The local certificates' rows of the headline (none when no radius was given)."""
    if not local:
        return []
    if "max_bound" not in local:
        return [("local certified bound", f"none ({local['reason']})")]
    rows = [(f"local certified bound over l_inf balls of radius {local['radius']:.3g} around {local['inputs']} of the "
             f"{local['measured']} inputs", f"max {fmt(local['max_bound'])}, median {fmt(local['median_bound'])}; "
             f"largest error found inside them {fmt(local['max_found'])}"
             + (f" (bound / found median {local['median_ratio']:.3g}x)" if local["median_ratio"] else ""))]
    if local.get("certified_agreement") is not None:
        rows.append(("certified agreement (argmax proved the same over the ball)",
                     f"{100 * local['certified_agreement']:.1f}% of {local['inputs']}"))
    return rows


def headline(r: dict[str, Any]) -> list[tuple[str, str]]:
    """The report's main figures as (label, value) rows: the top table of report.md and the
    console summary."""
    rows = [
        ("target params", f"{r['target_params']:,}"),
        ("random params (dense g)", f"{r['random_params']:,}"),
        ("kept params", f"{r['kept_params']:,} ({r['kept_params'] / max(r['target_params'], 1):.3g}x target)"),
        ("max / mean weight error", f"{fmt(r['max_weight_error'])} / {fmt(r['mean_weight_error'])}"),
        *_coverage_rows(r),
        *_n_rows(r),
        (f"max / mean output error ({r['verified_on']})", f"{fmt(r['max_output_error'])} / {fmt(r['mean_output_error'])}"
         + (f" ({r['errors_measured_on']})" if r.get("errors_measured_on") else "")),
        (f"certified bound on sup error over {_domain_words(r)}", _whole_bound_words(r)),
    ]
    if r.get("adversarial_output_error") is not None:
        adv = r["adversarial_output_error"]
        ratio = f" (certified / adversarial = {r['certified_bound'] / adv:.3g}x)" if adv > 0 and r["certified_bound"] \
            is not None else ""
        rows.append(("adversarial output error (a lower bound on the sup)", fmt(adv) + ratio))
    rows.extend(_local_rows(r.get("local_certificates")))
    if r.get("materialised_check"):
        m = r["materialised_check"]
        rows.append(("materialised vs collapsed form (largest difference, float32 / float64)",
                     f"{fmt(m['float32_difference'])} on {m['float32_inputs']} inputs / {fmt(m['float64_difference'])} "
                     f"on {m['float64_inputs']} (float rounding: <= {fmt(m['tolerance']['float32'])} / "
                     f"{fmt(m['tolerance']['float64'])})"))
    if "accuracy" in r:
        rows.append(("accuracy target / pruned", f"{100 * r['accuracy']['target']:.2f}% / {100 * r['accuracy']['pruned']:.2f}%"))
    if "agreement" in r:
        rows.append(("argmax agreement", f"{100 * r['agreement']:.2f}% (near ties, where the errors allow the "
                                          f"argmax to differ: {r['near_ties']})"))
    sc = r["status_counts"]
    rows.append(("statuses", f"{sc['optimal']} optimal, {sc['feasible']} feasible (time limit), {sc['infeasible']} "
                             f"infeasible; {r['presolved']} settled by the exact presolve, the rest by the backend"))
    s = r["seconds"]
    rows.append(("seconds: solve / assemble / verify / total",
                 f"{s['solve']:.2f} / {s['assemble']:.2f} / {s['verify']:.2f} / {s['total']:.2f}"))
    if s.get("verify_phases"):
        rows.append(("verify seconds by phase", ", ".join(f"{k.replace('_', ' ')} {v:.2f}"
                                                         for k, v in s["verify_phases"].items())))
    return rows


def _auto_range(r: dict[str, Any]) -> str:
    low = r.get("n_min") or 1
    return f"at most {r['n_max']}" if low == 1 else f"from {low} to {r['n_max']}"


def _n_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    th = r.get("n_theorem")
    if not th:
        return []
    label = "n per layer" + (f" (--n auto, {_auto_range(r)})" if r["n"] == "auto" else "")
    return [(f"{label}; theorem's log2(d l / eps) = {th['log2_d_l_over_eps']:.1f}",
             ", ".join(f"{row['layer']}: {row['n']}" for row in r["layers"]))]


def _coverage_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    if r.get("weights_missing_eps") is None:
        return []
    total = r["weights_within_eps"] + r["weights_missing_eps"]
    if not r["weights_missing_eps"]:
        return [(f"weights within eps = {r['eps']:g}", f"all {total:,}")]
    worst = "; ".join(f"{w['layer']}.{w['param']}[{', '.join(map(str, w['index']))}]: target {w['target']:.3g}, "
                      f"error {w['error']:.3g}" for w in r["worst_missing"])
    return [(f"weights within eps = {r['eps']:g}",
             f"{r['weights_within_eps']:,} of {total:,}: {r['weights_missing_eps']:,} MISS eps (worst: {worst})")]


def console_summary(r: dict[str, Any]) -> str:
    """The headline as aligned text lines for the terminal."""
    rows = headline(r)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def report_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# Lottery ticket for {r['target'].get('name', 'target')}\n",
        *([f"Target loaded: {'; '.join(r['target']['loaded'])}.\n"] if r["target"].get("loaded") else []),
        f"Random network: {len(r['layers'])} target layers -> {2 * len(r['layers'])} layers (fan-out A, ReLU, "
        f"combine B), n = {r['n'] if r['n'] != 'auto' else 'auto (per layer below, ' + _auto_range(r) + ')'}"
        f" coefficients per subset-sum problem, layout {r['layout']}, variant "
        f"{r['variant']}, seed {r['seed']}; objective {r['objective']}"
        + (f", eps = {r['eps']}" if r["eps"] is not None else "") + f"; backend {r['backend']}.\n",
        "| | value |", "|---|---|",
        *(f"| {k} | {v} |" for k, v in headline(r)),
    ]
    lines.append("")
    lines.append(f"Target parameters used as they are (not constructed): {r.get('unconstructed_params', 0)}"
                 + (f" ({', '.join(r['unconstructed_param_names'])})" if r.get("unconstructed_param_names") else "")
                 + ".\n")
    lines.append("## Per layer\n")
    lines.append("| layer | kind | weights | n | random params | kept params | max weight error | mean weight error | statuses | time |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for row in r["layers"]:
        st = row["status_counts"]
        status = ", ".join(f"{v} {k}" for k, v in st.items() if v)
        lines.append(f"| {row['layer']} | {row['kind']}{' +BN' if row['folded_bn'] else ''} | {row['weights']:,} | {row['n']} | "
                     f"{row['random_params']:,} | {row['kept_params']:,} | {fmt(row['max_weight_error'])} | "
                     f"{fmt(row['mean_weight_error'])} | {status} | {row['seconds']:.2f} s |")
    lines.extend(_n_lines(r))
    lines.append("")
    if r["certified_bound"] is None:
        lines.append(f"Certified bound: none, {r['bound_method']} (the op is kept as the target's own; no sound "
                     f"bound is given rather than a wrong one).\n")
    else:
        lines.append(f"Certified bound: {r['bound_method']}; it holds on every verified input: {r['bound_holds']}.\n")
    if r.get("forms"):
        lines.append("Which form of the pruned network gave each figure:\n")
        lines.extend(f"- {what}: {form}" for what, form in r["forms"].items())
        lines.append("")
    lines.append("![weight errors](weight_errors.png)\n")
    return "\n".join(lines)


def _n_lines(r: dict[str, Any]) -> list[str]:
    """Each layer's n beside the theorem's log2(d l / eps), and --n auto's search."""
    th = r.get("n_theorem")
    out = []
    if th:
        out.append(f"\nThe theorem's n = O(log2(d l / eps)): log2({th['d']} x {th['l']} / {th['eps']:g}) = "
                   f"{th['log2_d_l_over_eps']:.1f} (d: the largest fan-in or fan-out, l: the layers); n per layer: "
                   + ", ".join(f"{row['layer']} {row['n']}" for row in r["layers"]) + ".")
    for row in r["layers"]:
        s = row.get("n_search")
        if s:
            tried = "; ".join(f"n={t['n']}: {t['solved']:,} solved, {t['missing']:,} missing" for t in s["steps"])
            verdict = (f"every weight within eps at n = {s['n']}" if s["reached"]
                       else f"n_max = {s['n']} reached with weights still missing eps")
            out.append(f"- `--n auto`, layer {row['layer']}: {verdict} ({s['seconds']:.2f} s; {tried})")
    return out


#: errors below this are drawn at it (an exact weight has error 0)
ERROR_FLOOR = 1e-18


def weight_error_histograms(c: PrunedNetwork, bins: int = 60) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Per layer (name, bin edges of log10 error, counts of its weights and biases): what
    :func:`plot_weight_errors` draws, formed a layer's errors at a time."""
    out = []
    for spec, sol in zip(c.specs, c.solutions):
        parts = [np.log10(p + ERROR_FLOOR) for p in (sol.weight_error, sol.bias_error) if p is not None]
        low, high = min(float(p.min()) for p in parts), max(float(p.max()) for p in parts)
        edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
        out.append((spec.name, edges, sum(np.histogram(p, bins=edges)[0] for p in parts)))
    return out


def plot_weight_errors(c: PrunedNetwork, fh: BinaryIO) -> None:
    """Per-layer histograms of log10 weight error (:func:`weight_error_histograms`), as PNG into ``fh``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, edges, counts in weight_error_histograms(c):
        ax.stairs(counts, edges, linewidth=1.5, label=f"{name} ({int(counts.sum())})")
    ax.set_xlabel("log10 |target weight - kept coefficient sum|")
    ax.set_ylabel("weights")
    ax.set_title("Per-layer weight errors")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
