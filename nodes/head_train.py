"""Train and evaluate decision heads on mined labels (``wisv head train|eval``).

Every labelled mismatch is paired with CSI drawn from the channel models (rows of generated
pedestrian, vehicular and bursty traces, seeded). Two ways to make the head channel-aware:

* ``cost`` — CSI is an input and the loss is cost-sensitive: a harmless token (y = 1) weighs
  the latency of an extra round at its CSI (a false reject costs that), an important one λ
  (a false accept costs that); the head accepts when P ≥ 0.5.
* ``threshold`` — a CSI-free head trained with plain cross-entropy (calibrated P(harmless)),
  accepting when P ≥ λ / (λ + cost(CSI)) (the Bayes decision for the same costs).

Both are scored on held-out problems by the same expected cost, Σ cost(CSI) over false rejects
+ λ · false accepts; the better one ships. Models: logistic regression and a 1-hidden-layer MLP.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from channel_models.csi import CSI, csi_features
from nodes.head import DecisionHead, HeadSpec, round_cost_ms

log = logging.getLogger(__name__)
SCALARS = ["p_draft", "p_top", "entropy"]
FEATURE_SETS = {
    "scalars": SCALARS,
    "target": SCALARS + ["target_hidden"],            # protocols with head "target": nothing uploaded
    "full": SCALARS + ["target_hidden", "drafter_hidden"],  # head "full": drafter hidden uploaded
}
DECISION_DEFAULTS = {"bytes_up": 200.0, "bytes_down": 160.0, "rto_ms": 200.0, "compute_ms": 5.0}
MIN_PER_CLASS = 20  # labelled mismatches of each class (harmless, important) below which training refuses
CV_FOLDS = 5


class TooLittleData(ValueError):
    """Too few labels to train or to judge a head."""


def check_labels(harmless: np.ndarray, problems: np.ndarray, data_dir: Path) -> None:
    """TooLittleData unless each class has at least :data:`MIN_PER_CLASS` labels from at least
    :data:`CV_FOLDS` problems."""
    n_h, n_i = int(harmless.sum()), int((~harmless).sum())
    if min(n_h, n_i) < MIN_PER_CLASS or len(np.unique(problems)) < CV_FOLDS:
        raise TooLittleData(f"{data_dir}: {n_h} harmless and {n_i} important labels from {len(np.unique(problems))} "
                            f"problems; training needs at least {MIN_PER_CLASS} of each class from {CV_FOLDS} problems "
                            f"(mine more: wisv head mine --problems N)")


def cv_auc(rows: pd.DataFrame, th: np.ndarray, dh: np.ndarray, kind: str, seed: int = 0) -> dict:
    """ROC-AUC per feature set, cross-validated over :data:`CV_FOLDS` folds of problems: mean and
    95 % t-interval over folds, and whether the hidden-state heads beat the probability-only one."""
    from scipy import stats

    harmless = ~rows["important"].to_numpy(dtype=bool)
    problems = rows["problem"].to_numpy()
    uniq = np.random.default_rng(seed).permutation(np.unique(problems))
    fold_of = {p: i % CV_FOLDS for i, p in enumerate(uniq)}
    fold = np.array([fold_of[p] for p in problems])
    dims = {"p_draft": 1, "p_top": 1, "entropy": 1, "target_hidden": th.shape[1], "drafter_hidden": dh.shape[1]}
    out = {}
    for name, feats in FEATURE_SETS.items():
        x = feature_matrix(rows, th, dh, feats, None)
        scores = []
        for k in range(CV_FOLDS):
            te = fold == k
            h = fit_head(x[~te], harmless[~te].astype(np.float32), HeadSpec(kind, feats, {f: dims[f] for f in feats}),
                         seed=seed)
            with torch.no_grad():
                scores.append(auc(h(torch.tensor(x[te])).numpy(), harmless[te]))
        v = np.array([a for a in scores if np.isfinite(a)])
        half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
        out[name] = {"mean": float(v.mean()) if len(v) else float("nan"), "lo": float(v.mean() - half) if len(v) else
                     float("nan"), "hi": float(v.mean() + half) if len(v) else float("nan"), "folds": len(v)}
    for name in ("target", "full"):
        out[name]["better_than_probabilities"] = bool(out[name]["lo"] > out["scalars"]["hi"])
    return out


def sample_csi(n: int, seed: int = 0) -> list[CSI]:
    """``n`` CSI reports drawn from pedestrian, vehicular and bursty channels (seeded)."""
    from channel_models.generator import PRESETS, ChannelSpec
    from traces.ops import from_channel

    pool = []
    for k, preset in enumerate(("pedestrian", "vehicular", "bursty")):
        t = from_channel(ChannelSpec.from_dict({"duration_s": 60.0, "step_ms": 10.0, "seed": seed + k, **PRESETS[preset],
                                                "base_delay_ms": [5.0, 15.0, 40.0][k]})).data
        pool.append(t)
    df = pd.concat(pool, ignore_index=True)
    idx = np.random.default_rng(seed).integers(0, len(df), n)
    rows = df.iloc[idx]
    return [CSI.from_row(r) for r in rows.to_dict("records")]


def feature_matrix(rows: pd.DataFrame, th: np.ndarray, dh: np.ndarray, features: list[str],
                   csi: list[CSI] | None) -> np.ndarray:
    """Feature rows in the order :meth:`DecisionHead.features` builds them at the edge."""
    cols = []
    for f in features:
        if f in SCALARS:
            cols.append(rows[f].to_numpy(dtype=np.float32)[:, None])
        elif f == "target_hidden":
            cols.append(th.astype(np.float32))
        elif f == "drafter_hidden":
            cols.append(dh.astype(np.float32))
        elif f == "csi":
            cols.append(np.array([csi_features(c) for c in csi], dtype=np.float32))
    return np.concatenate(cols, axis=1)


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC-AUC (Mann–Whitney) of ``scores`` for the boolean ``positive`` class."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    ranks = pd.Series(np.concatenate([pos, neg])).rank().to_numpy()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def fit_head(x: np.ndarray, y: np.ndarray, spec: HeadSpec, weights: np.ndarray | None = None, epochs: int = 400,
             seed: int = 0, weight_decay: float = 1e-3) -> DecisionHead:
    """Fit a head (Adam, full batch) on features ``x`` and labels ``y`` (1 = harmless)."""
    torch.manual_seed(seed)
    head = DecisionHead(spec)
    xt, yt = torch.tensor(x), torch.tensor(y, dtype=torch.float32)
    head.mean.copy_(xt.mean(0))
    head.std.copy_(xt.std(0).clamp_min(1e-4))
    w = torch.ones_like(yt) if weights is None else torch.tensor(weights, dtype=torch.float32)
    w = w / w.mean()
    opt = torch.optim.Adam(head.net.parameters(), lr=0.01, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(epochs):
            logits = head.net((xt - head.mean) / head.std).squeeze(-1)
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits, yt, reduction="none") * w).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval()


def expected_cost(p: np.ndarray, harmless: np.ndarray, csi: list[CSI], thresholds: np.ndarray, lam: float) -> dict:
    """Cost (ms) of accepting where p ≥ thresholds: false rejects pay the round cost at their CSI,
    false accepts pay λ. Also precision/recall of 'harmless'."""
    acc = p >= thresholds
    costs = np.array([round_cost_ms(c, DECISION_DEFAULTS) for c in csi])
    fr = (~acc) & harmless
    fa = acc & ~harmless
    tp = acc & harmless
    return {"cost_ms_per_mismatch": float((costs[fr].sum() + lam * fa.sum()) / len(p)),
            "false_accept_rate": float(fa.sum() / max(1, (~harmless).sum())),
            "precision": float(tp.sum() / max(1, acc.sum())), "recall": float(tp.sum() / max(1, harmless.sum())),
            "accepted": float(acc.mean())}


@dataclass
class TrainReport:
    """What ``train_heads`` measured."""

    auc: dict
    comparison: dict
    chosen: str
    shipped: dict
    auc_cv: dict  # per feature set: mean, lo, hi over folds of problems, better_than_probabilities


def train_heads(data_dir: Path, out_dir: Path, lam: float = 1000.0, kind: str | None = None,
                seed: int = 0) -> TrainReport:
    """Train heads for every feature set and model kind (logistic, MLP; or only ``kind``),
    compare the two channel-aware schemes, save the ``full`` and ``target`` heads of the
    cheapest (kind, scheme) to ``out_dir`` with the pair they were mined on; returns the
    report, with cross-validated ROC-AUC and whether the heads beat the probability-only
    baseline; ``head-report.json`` also states the share of mined problems whose target outcome
    was unscorable (``unscorable``; None for datasets mined before it was recorded).
    :class:`TooLittleData` when the labels cannot support a head."""
    from nodes.mining import load_dataset

    rows, _, _ = load_dataset(data_dir)
    check_labels(~rows["important"].to_numpy(dtype=bool), rows["problem"].to_numpy(), data_dir)
    kinds = [kind] if kind else ["logistic", "mlp"]
    reports = {k: _train_kind(data_dir, lam, k, seed) for k in kinds}

    def total(k: str) -> float:
        r = reports[k]
        return sum(r["comparison"][n][r["chosen"]]["cost_ms_per_mismatch"] for n in ("full", "target"))

    best = min(kinds, key=total)
    r = reports[best]
    manifest = json.loads((data_dir / "manifest.json").read_text())
    rows, th, dh = load_dataset(data_dir)
    cv = cv_auc(rows, th, dh, best.split("/")[0], seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    shipped = {}
    for name, fname in (("full", "head-full.safetensors"), ("target", "head-target.safetensors")):
        head = r["heads"][name]
        head.spec.pair = manifest.get("pair", {})
        shipped[name] = str(head.save(out_dir / fname))
    report = TrainReport(r["auc"], {k: v["comparison"] for k, v in reports.items()}, f"{best}/{r['chosen']}", shipped,
                         cv)
    weak = [n for n in ("target", "full") if not cv[n]["better_than_probabilities"]]
    if weak:
        log.warning("the %s head(s) are no better than the probability-only baseline (cross-validated ROC-AUC %s)",
                    ", ".join(weak), {n: round(cv[n]["mean"], 3) for n in ("scalars", *weak)})
    (out_dir / "head-report.json").write_text(json.dumps({**report.__dict__, "auc_by_kind": {
        k: v["auc"] for k, v in reports.items()}, "labels": {"harmless": int((~rows["important"]).sum()),
                                                             "important": int(rows["important"].sum())},
        "no_better_than_probabilities": weak, "task": {k: manifest.get(k) for k in ("task", "answer_filter")},
        "unscorable": {"problems": manifest.get("unscorable"), "of": manifest.get("scored_problems"),
                       "share": manifest.get("unscorable_share")}}, indent=2) + "\n")
    return report


def _train_kind(data_dir: Path, lam: float, kind: str, seed: int) -> dict:
    """Heads of one model kind for every feature set, with both schemes compared."""
    from nodes.mining import load_dataset

    rows, th, dh = load_dataset(data_dir)
    harmless = ~rows["important"].to_numpy(dtype=bool)
    y = harmless.astype(np.float32)
    problems = rows["problem"].to_numpy()
    rng = np.random.default_rng(seed)
    held = set(rng.choice(np.unique(problems), size=max(1, len(np.unique(problems)) // 5), replace=False).tolist())
    test = np.array([p in held for p in problems])
    train = ~test
    csi = sample_csi(len(rows), seed)
    csi_te = [c for c, m in zip(csi, test) if m]
    aucs, comparison, heads = {}, {}, {}
    for name, feats in FEATURE_SETS.items():
        dims = {"p_draft": 1, "p_top": 1, "entropy": 1, "target_hidden": th.shape[1], "drafter_hidden": dh.shape[1], "csi": 4}
        # Scheme "threshold": CSI-free, plain cross-entropy.
        spec = HeadSpec(kind, feats, {f: dims[f] for f in feats}, 0.5)
        x = feature_matrix(rows, th, dh, feats, None)
        h = fit_head(x[train], y[train], spec, seed=seed)
        with torch.no_grad():
            p_te = h(torch.tensor(x[test])).numpy()
        aucs[name] = auc(p_te, harmless[test])
        thr = np.array([lam / (lam + round_cost_ms(c, DECISION_DEFAULTS)) for c in csi_te])
        res_thr = expected_cost(p_te, harmless[test], csi_te, thr, lam)
        # Scheme "cost": CSI as input, cost-sensitive weights.
        feats_c = feats + ["csi"]
        spec_c = HeadSpec(kind, feats_c, {f: dims[f] for f in feats_c}, 0.5)
        xc = feature_matrix(rows, th, dh, feats_c, csi)
        w = np.where(harmless, [round_cost_ms(c, DECISION_DEFAULTS) for c in csi], lam)
        hc = fit_head(xc[train], y[train], spec_c, weights=w[train], seed=seed)
        with torch.no_grad():
            pc_te = hc(torch.tensor(xc[test])).numpy()
        res_cost = expected_cost(pc_te, harmless[test], csi_te, np.full(len(pc_te), 0.5), lam)
        # Reference points: accept no mismatch (vanilla) and a CSI-blind fixed threshold of 0.5.
        res_none = expected_cost(np.zeros(len(p_te)), harmless[test], csi_te, np.full(len(p_te), 0.5), lam)
        res_fixed = expected_cost(p_te, harmless[test], csi_te, np.full(len(p_te), 0.5), lam)
        comparison[name] = {"threshold": res_thr, "cost": res_cost, "vanilla": res_none, "fixed_0.5": res_fixed}
        heads[name] = (h, hc)
    scheme = "threshold" if sum(comparison[n]["threshold"]["cost_ms_per_mismatch"] for n in ("full", "target")) <= \
        sum(comparison[n]["cost"]["cost_ms_per_mismatch"] for n in ("full", "target")) else "cost"
    chosen = {}
    for name in ("full", "target"):
        h, hc = heads[name]
        head = h if scheme == "threshold" else hc
        head.spec.decision = ({"mode": "csi_cost", "lambda_ms": lam, **DECISION_DEFAULTS} if scheme == "threshold"
                              else {"mode": "fixed"})
        head.spec.note = (f"trained on {int(train.sum())} mined mismatches, {kind}, scheme {scheme}, lambda {lam:g} ms, "
                          f"held-out AUC {aucs[name]:.3f}")
        chosen[name] = head
    return {"auc": aucs, "comparison": comparison, "chosen": scheme, "heads": chosen}
