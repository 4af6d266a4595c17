"""`lottery claims <name>`: test the paper's claims with exact computations (see the README, "Testing the theory").

* ``subset-sum``: random subset sum. For m coefficients drawn U[-1,1] or as products of two
  U[-1,1], the exact sup error over targets in [-1, 1] (all 2^m sums sorted), the probability
  P(sup error <= eps) over seeds, the smallest m reaching probability 1/2 for each eps, and a fit
  m = C log2(1/eps) + c0 with bootstrap confidence intervals.
* ``lower-bound``: m coefficients give at most 2^m sums, so the sup error over [-1, 1] is at
  least 2^-m for any coefficients. Checked on random sets, powers of two and sets found by a
  numerical search; and for d x d layers, the construction's total and kept parameters against
  d^2 log2(1/eps).
* ``width``: random target MLPs of width d and depth l; the smallest n (units per input) whose
  constructed network reaches error <= eps (certified bound, and observed), against
  log2(d l / eps), with the fitted slope.

Every command writes NAME.json, NAME.md and NAME.png into --out and prints one verdict line
that states what was measured. ``--quick`` runs in seconds (used by the tests).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from solver.theory import sup_error

from .common import cli_main, command_line, machine_info, markdown_table, save_figure, write_outputs

EPSILONS = [1e-1, 1e-2, 1e-3, 1e-4]
DISTRIBUTIONS = ("uniform", "product")


def draw(rng: np.random.Generator, dist: str, count: int, m: int) -> np.ndarray:
    """``uniform``: U[-1, 1]; ``product``: u * v with u, v ~ U[-1, 1] (the construction's)."""
    if dist == "uniform":
        return rng.uniform(-1, 1, (count, m))
    return rng.uniform(-1, 1, (count, m)) * rng.uniform(-1, 1, (count, m))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, axes, path: Path) -> dict:
    """Grid, tight layout, write the PNG, free the figure; returns the plotted series."""
    return save_figure(plt, fig, path)


# ----------------------------------------------------------------------------- subset-sum

def m_needed(sup: dict[int, np.ndarray], eps: float, level: float = 0.5) -> int | None:
    """Smallest m whose fraction of seeds with sup error <= eps reaches ``level``."""
    for m in sorted(sup):
        if np.mean(sup[m] <= eps) >= level:
            return m
    return None


def fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def claim_subset_sum(args: argparse.Namespace) -> dict[str, Any]:
    ms = list(range(2, 15)) if args.quick else list(range(2, 25))
    seeds = 40 if args.quick else 200
    epsilons = EPSILONS[:2] if args.quick else EPSILONS
    rng = np.random.default_rng(args.seed)
    data: dict[str, dict[int, np.ndarray]] = {}
    for dist in DISTRIBUTIONS:
        data[dist] = {}
        for m in ms:
            count = seeds if m <= 20 else max(40, seeds // 2)  # 2^m sums each; fewer seeds at the top
            data[dist][m] = sup_error(draw(rng, dist, count, m), -1.0, 1.0)
    rows, fits = [], {}
    boot_rng = np.random.default_rng(args.seed + 1)
    for dist in DISTRIBUTIONS:
        needed = {eps: m_needed(data[dist], eps) for eps in epsilons}
        for m in ms:
            rows.append([dist, m, len(data[dist][m]), f"{np.median(data[dist][m]):.3g}"]
                        + [f"{np.mean(data[dist][m] <= eps):.2f}" for eps in epsilons])
        reached = [(eps, n) for eps, n in needed.items() if n is not None]
        fit = {"m_needed": {f"{eps:g}": n for eps, n in needed.items()}}
        if len(reached) >= 2:
            x = np.array([math.log2(1 / e) for e, _ in reached])
            y = np.array([n for _, n in reached], dtype=float)
            C, c0 = fit_line(x, y)
            boots = []
            for _ in range(200):  # bootstrap over seeds
                resampled = {m: v[boot_rng.integers(0, len(v), len(v))] for m, v in data[dist].items()}
                pts = [(math.log2(1 / e), m_needed(resampled, e)) for e in epsilons]
                pts = [(a, b) for a, b in pts if b is not None]
                if len(pts) >= 2:
                    boots.append(fit_line(np.array([a for a, _ in pts]), np.array([b for _, b in pts], dtype=float)))
            boots = np.array(boots)
            fit.update({"C": C, "c0": c0, "C_ci95": np.percentile(boots[:, 0], [2.5, 97.5]).tolist(),
                        "c0_ci95": np.percentile(boots[:, 1], [2.5, 97.5]).tolist(),
                        "m_at_0.01": C * math.log2(100) + c0})
        fits[dist] = fit

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    for dist, style in zip(DISTRIBUTIONS, ("-", "--")):
        for eps in epsilons:
            axes[0].plot(ms, [np.mean(data[dist][m] <= eps) for m in ms], style, marker="o", ms=3,
                         label=f"{dist}, eps={eps:g}")
        axes[1].semilogy(ms, [np.median(data[dist][m]) for m in ms], style, marker="o", ms=3, label=f"{dist}: median sup error")
    axes[1].semilogy(ms, [2.0 ** -m for m in ms], "k:", label="counting bound 2^-m")
    axes[0].set_xlabel("m (coefficients)")
    axes[0].set_ylabel("P(sup error over [-1,1] <= eps)")
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("m (coefficients)")
    axes[1].set_ylabel("sup error over [-1,1]")
    axes[1].legend(fontsize=8)
    _save(plt, fig, axes, args.out / "subset-sum.png")

    parts = []
    for dist in DISTRIBUTIONS:
        f = fits[dist]
        if "C" in f:
            parts.append(f"{dist}: m needed (P >= 1/2) = {f['C']:.2f} log2(1/eps) + {f['c0']:.2f} "
                         f"(C 95% CI [{f['C_ci95'][0]:.2f}, {f['C_ci95'][1]:.2f}]), "
                         f"{f['m_needed'].get('0.01')} at eps = 0.01")
        else:
            parts.append(f"{dist}: too few eps reached for a fit ({f['m_needed']})")
    verdict = ("subset-sum: " + "; ".join(parts) + "; the paper's Experiment 1 used m = 21 at eps = 0.01")
    headers = ["distribution", "m", "seeds", "median sup error"] + [f"P(<= {e:g})" for e in epsilons]
    md = _doc("Claim 1: random subset sum", args, verdict,
              "Exact sup error over targets in [-1, 1]: all 2^m subset sums sorted; the sup of the distance to "
              "the nearest sum is at an interval end or half the largest gap inside. 'm needed' is the smallest m "
              "with P(sup error <= eps) >= 1/2 over the seeds; C and c0 are a least-squares fit of m needed "
              "against log2(1/eps), with 95% bootstrap intervals (200 resamples of the seeds).",
              markdown_table(headers, rows), "subset-sum.png")
    return {"verdict": verdict, "fits": fits, "m": ms, "seeds": seeds, "epsilons": epsilons,
            "sup_error": {d: {str(m): v.tolist() for m, v in data[d].items()} for d in DISTRIBUTIONS}, "markdown": md}


# ----------------------------------------------------------------------------- lower bound

def powers_of_two(m: int) -> np.ndarray:
    """{h, 2h, ..., 2^(m-2) h} and -(2^(m-1) - 1) h with (2^(m-1) - 1) h = 1: 2^m - 1 equally
    spaced sums covering [-1, 1], sup error 1 / (2 (2^(m-1) - 1)), about the bound."""
    if m == 1:
        return np.array([[1.0]])
    h = 1.0 / (2 ** (m - 1) - 1)
    return np.array([[h * 2 ** k for k in range(m - 1)] + [-(2 ** (m - 1) - 1) * h]])


def local_search(m: int, rng: np.random.Generator, steps: int, restarts: int) -> tuple[np.ndarray, float]:
    """Minimise the sup error over [-1, 1] by random perturbation (accept improvements), from
    random starts and from a perturbed powers-of-two set."""
    best_c, best = None, math.inf
    for r in range(restarts):
        c = powers_of_two(m)[0] * (1 + 0.05 * rng.normal(size=m)) if r == 0 else rng.uniform(-1, 1, m)
        cur = float(sup_error(c[None], -1, 1, threads=1)[0])
        scale = 0.1
        for _ in range(steps):
            cand = c + scale * rng.normal(size=(16, m)) * (rng.random((16, m)) < 0.3)
            errs = sup_error(cand, -1, 1, threads=1)
            k = int(np.argmin(errs))
            if errs[k] < cur:
                c, cur = cand[k], float(errs[k])
            else:
                scale *= 0.9
            if scale < 1e-7:
                scale = 0.05
        if cur < best:
            best_c, best = c, cur
    return best_c, best


def layer_params(d: int, eps: float, seed: int, n_max: int) -> dict[str, Any]:
    """Smallest n for which a d x d target (weights U[-1, 1], input >= 0) is within eps weight by
    weight (min-error); then the dense random network's size and the min-size ticket's kept count."""
    import torch

    from models.construct import ConstructOptions, construct

    gen = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(d, d, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(d, d, generator=gen) * 2 - 1)
    target = torch.nn.Sequential(layer).eval()
    for n in range(1, n_max + 1):
        options = ConstructOptions.from_kwargs(n=n, objective="min-error", seed=seed, progress=False,
                                               scale_policy="max", scale_margin=1.0)
        c = construct(target, (d,), (0.0, 1.0), options)
        if c.solutions[0].weight_error.max() <= eps:
            break
    else:
        return {"d": d, "eps": eps, "n": None}
    small = construct(target, (d,), (0.0, 1.0), ConstructOptions.from_kwargs(
        n=n, objective="min-size", eps=eps, seed=seed, progress=False, scale_policy="max", scale_margin=1.0))
    bits = d * d * math.log2(1 / eps)
    total = c.specs[0].dense_params()
    kept = small.solutions[0].kept()
    return {"d": d, "eps": eps, "n": n, "total_params": total, "kept_params": kept, "d2_log2_inv_eps": bits,
            "total_ratio": total / bits, "kept_ratio": kept / bits}


def claim_lower_bound(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    ms = list(range(1, 11)) if args.quick else list(range(1, 19))
    seeds = 30 if args.quick else 200
    rows, checks = [], []
    for m in ms:
        bound = 2.0 ** -m
        rand_u = sup_error(draw(rng, "uniform", seeds, m), -1, 1)
        rand_p = sup_error(draw(rng, "product", seeds, m), -1, 1)
        p2 = float(sup_error(powers_of_two(m), -1, 1)[0])
        search_m = m <= (8 if args.quick else 12)
        found = local_search(m, rng, 40 if args.quick else 300, 2 if args.quick else 4)[1] if search_m else math.nan
        ratios = {"uniform": rand_u.min() / bound, "product": rand_p.min() / bound, "powers_of_two": p2 / bound,
                  "search": found / bound}
        checks.append(min(v for v in ratios.values() if not math.isnan(v)))
        rows.append([m, f"{bound:.3g}", f"{ratios['uniform']:.3g}", f"{ratios['product']:.3g}",
                     f"{ratios['powers_of_two']:.4g}", "n/a" if math.isnan(found) else f"{ratios['search']:.4g}"])
    violated = [m for m, r in zip(ms, checks) if r < 1.0 - 1e-9]

    ds = [4, 8] if args.quick else [8, 16, 32, 64]
    epsilons = [1e-1] if args.quick else [1e-1, 1e-2, 1e-3]
    layers = [layer_params(d, eps, args.seed, 28) for d in ds for eps in epsilons]
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    axes[0].semilogy(ms, [2.0 ** -m for m in ms], "k-", label="bound 2^-m")
    axes[0].semilogy(ms, [float(r[4]) * 2.0 ** -m for r in rows], "o-", label="powers of two")
    axes[0].set_xlabel("m")
    axes[0].set_ylabel("sup error over [-1,1]")
    axes[0].legend()
    for eps in epsilons:
        pts = [(l["d"], l["total_ratio"], l["kept_ratio"]) for l in layers if l["eps"] == eps and l["n"]]
        if pts:
            axes[1].plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"total / d^2 log2(1/eps), eps={eps:g}")
            axes[1].plot([p[0] for p in pts], [p[2] for p in pts], "s--", label=f"kept / d^2 log2(1/eps), eps={eps:g}")
    axes[1].axhline(1.0, color="k", linewidth=0.8)
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("d (d x d layer)")
    axes[1].legend(fontsize=7)
    _save(plt, fig, axes, args.out / "lower-bound.png")

    tot = [l["total_ratio"] for l in layers if l["n"]]
    verdict = (f"lower-bound: over m = {ms[0]}..{ms[-1]}, {len(ms) * (2 * seeds + 1)} coefficient sets plus searched "
               f"ones, the smallest sup error / 2^-m was {min(checks):.4g} ({'no violation' if not violated else f'VIOLATED at m={violated}'}); "
               f"powers of two reach {float(rows[-1][4]):.4g}x the bound at m = {ms[-1]}; the construction's total "
               f"parameters are {min(tot):.3g}-{max(tot):.3g} x d^2 log2(1/eps) for d in {ds}, eps in {epsilons}")
    md = _doc("Claim 2: the counting lower bound", args, verdict,
              "m coefficients have at most 2^m subset sums, so some target in [-1, 1] is at least 2^-m from all of "
              "them. Columns: the smallest sup error / 2^-m over random sets (U[-1,1], products), the powers-of-two "
              "set, and the best set of a random local search (m small).",
              markdown_table(["m", "2^-m", "random U (min ratio)", "random products (min ratio)", "powers of two",
                              "local search"], rows)
              + "\n### d x d layers\nSmallest n with every weight within eps (min-error), the dense random pair's "
                "parameters and the min-size ticket's kept parameters, against d^2 log2(1/eps).\n\n"
              + markdown_table(["d", "eps", "n", "total params", "kept params", "d^2 log2(1/eps)", "total ratio", "kept ratio"],
                               [[l["d"], l["eps"], l["n"], l.get("total_params"), l.get("kept_params"),
                                 f"{l.get('d2_log2_inv_eps', 0):.0f}", f"{l.get('total_ratio', math.nan):.3g}",
                                 f"{l.get('kept_ratio', math.nan):.3g}"] for l in layers]),
              "lower-bound.png")
    return {"verdict": verdict, "min_ratio": float(min(checks)), "violations": violated, "rows": rows, "layers": layers,
            "markdown": md}


# ----------------------------------------------------------------------------- width

def random_mlp(d: int, depth: int, seed: int):
    """depth Linear layers d -> d (no biases), ReLU between, weights U[-1, 1] / sqrt(d)."""
    import torch

    from models.zoo import mlp

    torch.manual_seed(seed)
    net = mlp([d] * (depth + 1), biases=False)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, torch.nn.Linear):
                mod.weight.uniform_(-1, 1).div_(math.sqrt(d))
    return net.eval()


def smallest_width(d: int, depth: int, eps: float, seed: int, n_max: int, samples: int) -> dict[str, Any]:
    """Scan n upward; the first n whose certified bound (resp. observed error) is <= eps."""
    from models.construct import ConstructOptions, construct
    from models.verify import verify

    target = random_mlp(d, depth, seed)
    found: dict[str, int | None] = {"bound": None, "observed": None}
    trace = []
    for n in range(1, n_max + 1):
        c = construct(target, (d,), (0.0, 1.0), ConstructOptions.from_kwargs(n=n, seed=seed, progress=False))
        check = verify(c, None, samples=samples)
        trace.append((n, check["certified_bound"], check["max_output_error"]))
        if found["observed"] is None and check["max_output_error"] <= eps:
            found["observed"] = n
        if check["certified_bound"] <= eps:
            found["bound"] = n
            break
    return {"d": d, "depth": depth, "eps": eps, "n_bound": found["bound"], "n_observed": found["observed"],
            "x": math.log2(d * depth / eps), "trace": trace}


def claim_width(args: argparse.Namespace) -> dict[str, Any]:
    ds = [4, 8] if args.quick else [8, 16, 32, 64]
    depths = [2] if args.quick else [2, 3, 4]
    epsilons = [1e-1] if args.quick else [1e-1, 1e-2]
    n_max = 20 if args.quick else 30
    results = [smallest_width(d, l, eps, args.seed, n_max, 64 if args.quick else 256)
               for d in ds for l in depths for eps in epsilons]
    fits = {}
    for key in ("n_bound", "n_observed"):
        pts = [(r["x"], r[key]) for r in results if r[key] is not None]
        if len(pts) >= 2 and len({p[0] for p in pts}) >= 2:
            fits[key] = dict(zip(("slope", "intercept"), fit_line(np.array([p[0] for p in pts]), np.array([p[1] for p in pts], dtype=float))))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for key, marker in (("n_bound", "o"), ("n_observed", "s")):
        pts = [(r["x"], r[key]) for r in results if r[key] is not None]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker,
                   label=f"{key.split('_')[1]}: error <= eps" + (f" (slope {fits[key]['slope']:.2f})" if key in fits else ""))
        if key in fits:
            xs = np.linspace(min(p[0] for p in pts), max(p[0] for p in pts), 10)
            ax.plot(xs, fits[key]["slope"] * xs + fits[key]["intercept"], "--")
    ax.set_xlabel("log2(d l / eps)")
    ax.set_ylabel("smallest n (units per input and sign)")
    ax.legend(fontsize=8)
    _save(plt, fig, [ax], args.out / "width.png")
    missing = [(r["d"], r["depth"], r["eps"]) for r in results if r["n_bound"] is None]
    verdict = ("width: smallest n against log2(d l / eps) over d in {ds}, l in {depths}, eps in {eps}: ".format(ds=ds, depths=depths, eps=epsilons)
               + "; ".join(f"{k.split('_')[1]} criterion slope {v['slope']:.2f}, intercept {v['intercept']:.2f}" for k, v in fits.items())
               + (f"; certified bound not reached within n <= {n_max} for {missing}" if missing else ""))
    rows = [[r["d"], r["depth"], r["eps"], f"{r['x']:.2f}", r["n_bound"], r["n_observed"]] for r in results]
    md = _doc("Claim 3: logarithmic width", args, verdict,
              "Random target MLPs (depth l Linear layers d -> d, weights U[-1,1]/sqrt(d), no biases, ReLU between), "
              "inputs in [0,1]^d; constructed with min-error for n = 1, 2, ...; 'bound' is the first n whose certified "
              "sup error over the input box is <= eps, 'observed' the first n whose largest error on uniform samples "
              "of the box is <= eps. Slopes are least-squares fits of n against log2(d l / eps).",
              markdown_table(["d", "l", "eps", "log2(d l / eps)", "n (bound)", "n (observed)"], rows), "width.png")
    return {"verdict": verdict, "fits": fits, "results": results, "markdown": md}


# ----------------------------------------------------------------------------- shared

def _doc(title: str, args: argparse.Namespace, verdict: str, method: str, table: str, png: str) -> str:
    info = machine_info()
    return (f"# {title}\n\nCommand: `{command_line()}`  \nMachine: {info['cpu']}, {info['cores']} cores; seed {args.seed}"
            f"{'; quick mode' if args.quick else ''}\n\n**Verdict (measured):** {verdict}\n\n{method}\n\n{table}\n![{title}]({png})\n")


CLAIMS = {"subset-sum": claim_subset_sum, "lower-bound": claim_lower_bound, "width": claim_width}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=list(CLAIMS) + ["all"], help="which claim to test")
    p.add_argument("--quick", action="store_true", help="small ranges (seconds); the full mode takes minutes")
    p.add_argument("--seed", type=int, default=0, help="seed of the random coefficient sets and targets (default 0)")
    p.add_argument("--out", type=Path, default=Path("bench_out/claims"),
                   help="directory for NAME.json, NAME.md and NAME.png (default bench_out/claims)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    args.out.mkdir(parents=True, exist_ok=True)
    names = list(CLAIMS) if args.name == "all" else [args.name]
    results = {}
    for name in names:
        start = time.perf_counter()
        res = CLAIMS[name](args)
        res["seconds"] = time.perf_counter() - start
        md = res.pop("markdown") + f"\nTime: {res['seconds']:.1f} s\n"
        write_outputs(args.out, name, {"claim": name, "command": command_line(), "seed": args.seed, "quick": args.quick, **res}, md)
        print(res["verdict"])
        print(f"  ({res['seconds']:.1f} s; wrote {args.out / (name + '.md')}, .json, .png)", file=sys.stderr)
        results[name] = res
    return results


def main(argv: list[str] | None = None) -> None:
    cli_main("lottery claims", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
