"""The decision head file format and the policy that uses it on the edge.

A head decides, for a draft token that is *not* the target's choice, whether it may stand
(P(harmless) ≥ threshold). Features per draft position i, by name:

* ``p_draft``, ``p_top``, ``entropy``: target probability of the draft token, of its own top
  token, and the entropy (nats) of its distribution at that position;
* ``target_hidden``: the target's last hidden state that predicts draft token i;
* ``drafter_hidden``: the drafter's hidden state that produced draft token i (uploaded);
* ``csi``: SNR (dB), log uplink and downlink rate (Mbit/s), log RTT (ms) from the device's report
  (:func:`channel_models.csi.csi_features`).

Decision: ``fixed`` accepts when P(harmless) ≥ threshold; ``csi_cost`` accepts when the
expected cost of rejecting, P · cost_ms(CSI) (an extra round at the CSI in force), exceeds that
of accepting, (1 − P) · λ (λ in ms: the user's price of an accuracy-changing acceptance), i.e.
P ≥ λ / (λ + cost_ms(CSI)). See :func:`round_cost_ms`.

File: one ``.safetensors`` with the weights (``mean``/``std`` normaliser, ``w0``/``b0``[,
``w1``/``b1``]) and metadata ``wisv_head`` (JSON: version, kind, features, dims, threshold).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from channel_models.csi import CSI, csi_features, round_trip_ms
from nodes.decoding.policies import VerifyContext, _RelaxedPolicy

HEAD_VERSION = 1
SCALARS = ("p_draft", "p_top", "entropy")


@dataclass
class HeadSpec:
    """What a head reads and how it decides."""

    kind: str  # "logistic" or "mlp"
    features: list[str]
    dims: dict[str, int]
    threshold: float = 0.5
    note: str = ""
    decision: dict = field(default_factory=lambda: {"mode": "fixed"})
    pair: dict = field(default_factory=dict)  # {"drafter": model_identity, "target": model_identity}

    @property
    def needs_drafter_hidden(self) -> bool:
        """True when the head reads the drafter's hidden states (they must be uploaded)."""
        return "drafter_hidden" in self.features


class DecisionHead(torch.nn.Module):
    """Normaliser + logistic regression or a 1-hidden-layer MLP, giving P(harmless)."""

    def __init__(self, spec: HeadSpec, hidden_units: int = 64):
        super().__init__()
        self.spec = spec
        n_in = sum(spec.dims[f] for f in spec.features)
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("std", torch.ones(n_in))
        if spec.kind == "logistic":
            self.net = torch.nn.Linear(n_in, 1)
        elif spec.kind == "mlp":
            self.net = torch.nn.Sequential(torch.nn.Linear(n_in, hidden_units), torch.nn.ReLU(),
                                           torch.nn.Linear(hidden_units, 1))
        else:
            raise ValueError(f"head kind must be logistic or mlp, not {spec.kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """P(harmless) for feature rows x [N, n_in]."""
        return torch.sigmoid(self.net((x - self.mean) / self.std).squeeze(-1))

    def features(self, ctx: VerifyContext, positions: torch.Tensor) -> torch.Tensor:
        """The feature rows of draft ``positions`` of a round."""
        logits = ctx.target_logits[positions]
        p = torch.softmax(logits.float(), dim=-1)
        cols = []
        for name in self.spec.features:
            if name == "p_draft":
                cols.append(p[torch.arange(len(positions)), ctx.draft_tokens[positions]][:, None])
            elif name == "p_top":
                cols.append(p.max(dim=-1).values[:, None])
            elif name == "entropy":
                cols.append(-(p * torch.log(p.clamp_min(1e-20))).sum(-1, keepdim=True))
            elif name == "target_hidden":
                cols.append(ctx.target_hidden[positions].float())
            elif name == "drafter_hidden":
                if ctx.drafter_hidden is None:
                    raise ValueError("this head needs the drafter's hidden states")
                cols.append(torch.as_tensor(ctx.drafter_hidden)[positions].float())
            elif name == "csi":
                cols.append(torch.tensor([csi_features(ctx.csi or CSI())]).expand(len(positions), -1))
            else:
                raise ValueError(f"unknown head feature {name!r}")
        return torch.cat(cols, dim=-1)

    def save(self, path: str | Path) -> Path:
        """Write the head as one versioned safetensors file."""
        from safetensors.torch import save_file

        meta = {"version": HEAD_VERSION, "kind": self.spec.kind, "features": self.spec.features, "dims": self.spec.dims,
                "threshold": self.spec.threshold, "note": self.spec.note, "decision": self.spec.decision,
                "pair": self.spec.pair}
        tensors = {"mean": self.mean, "std": self.std}
        linears = [m for m in self.net.modules() if isinstance(m, torch.nn.Linear)]
        for i, lin in enumerate(linears):
            tensors[f"w{i}"], tensors[f"b{i}"] = lin.weight.detach(), lin.bias.detach()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"wisv_head": json.dumps(meta)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "DecisionHead":
        """Read a head file; ValueError for a wrong version or a damaged file."""
        from safetensors import safe_open

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no decision head here")
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("wisv_head", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("version") != HEAD_VERSION:
            raise ValueError(f"{path}: head version {meta.get('version')!r}, expected {HEAD_VERSION}")
        spec = HeadSpec(meta["kind"], list(meta["features"]), dict(meta["dims"]), float(meta["threshold"]),
                        meta.get("note", ""), meta.get("decision", {"mode": "fixed"}), meta.get("pair") or {})
        hidden_units = tensors["w0"].shape[0] if spec.kind == "mlp" else 64
        head = cls(spec, hidden_units)
        head.mean.copy_(tensors["mean"])
        head.std.copy_(tensors["std"])
        linears = [m for m in head.net.modules() if isinstance(m, torch.nn.Linear)]
        for i, lin in enumerate(linears):
            lin.weight.data.copy_(tensors[f"w{i}"])
            lin.bias.data.copy_(tensors[f"b{i}"])
        return head.eval()


def check_pair(spec: HeadSpec, target: dict, drafter: dict | None = None, where: str = "head") -> None:
    """ValueError naming what differs when a head does not belong to this pair: the hidden sizes
    its features read must be the models' (always), and when the head records the pair it was
    trained on, architecture, vocabulary and config fingerprint must match too. ``target`` and
    ``drafter`` are :func:`nodes.models.model_identity` dicts (drafter None: unknown yet)."""
    problems = []
    if "target_hidden" in spec.dims and spec.dims["target_hidden"] != target["hidden_size"]:
        problems.append(f"target hidden size {target['hidden_size']} ≠ {spec.dims['target_hidden']} the head reads")
    if drafter is not None and "drafter_hidden" in spec.dims and spec.dims["drafter_hidden"] != drafter["hidden_size"]:
        problems.append(f"drafter hidden size {drafter['hidden_size']} ≠ {spec.dims['drafter_hidden']} the head reads")
    for role, ident in (("target", target), ("drafter", drafter)):
        trained = spec.pair.get(role)
        if not trained or ident is None:
            continue
        for k in ("architecture", "vocab_size", "hidden_size", "fingerprint"):
            if trained.get(k) != ident.get(k):
                problems.append(f"{role} {k} {ident.get(k)!r} ≠ {trained.get(k)!r} it was trained on")
    if problems:
        raise ValueError(f"{where} does not belong to this drafter/target pair: " + "; ".join(problems) +
                         " (train one for this pair: wisv head mine / wisv head train, then --head-dir)")


class HeadPolicy(_RelaxedPolicy):
    """WISV acceptance: a draft token stands if it matches the target's choice OR the head
    judges the mismatch harmless; the accepted prefix is cut at the first important mismatch.
    The head runs only at mismatched positions (where the drafter hidden was uploaded)."""

    name = "wisv-head"

    def __init__(self, head: DecisionHead, threshold: float | None = None, lambda_ms: float | None = None):
        self.head = head
        self.threshold = head.spec.threshold if threshold is None else threshold
        self.decision = dict(head.spec.decision)
        if lambda_ms is not None:
            self.decision["lambda_ms"] = float(lambda_ms)
        self.needs_drafter_hidden = head.spec.needs_drafter_hidden

    @torch.inference_mode()
    def tolerate(self, ctx: VerifyContext) -> torch.Tensor:
        mism = torch.tensor(ctx.mismatch_positions(), dtype=torch.long)
        ok = torch.zeros(ctx.gamma, dtype=torch.bool)
        if mism.numel():
            ok[mism] = self.head(self.head.features(ctx, mism)) >= self.round_threshold(ctx.csi or CSI())
        return ok

    def round_threshold(self, csi: CSI) -> float:
        """P(harmless) needed to accept, at this CSI."""
        if self.decision.get("mode") != "csi_cost":
            return self.threshold
        lam = float(self.decision["lambda_ms"])
        return lam / (lam + round_cost_ms(csi, self.decision))


def round_cost_ms(csi: CSI, decision: dict) -> float:
    """Expected latency (ms) of one extra round at this CSI: one exchange of a draft
    (``bytes_up``) and a verdict (``bytes_down``) through :func:`channel_models.csi.round_trip_ms`
    (delays, transmission, a retransmission timeout per expected lost segment) plus the compute
    of a round (``compute_ms``)."""
    return round_trip_ms(csi, decision.get("bytes_up", 200.0), decision.get("bytes_down", 160.0),
                         decision.get("rto_ms", 200.0)) + float(decision.get("compute_ms", 5.0))
