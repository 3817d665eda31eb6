"""Load drafter/target causal-LM pairs from local Hugging Face folders (never from a hub).

The same code serves the shipped default pair (``nodes/pretrained/default/{drafter,target}``) and
a user's own pair on disk (e.g. Llama-3.2-1B / Llama-3.1-8B); the two must share a tokenizer.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_DIR = Path(__file__).resolve().parent / "pretrained" / "default"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ModelPair:
    """A drafter, a target and their shared tokenizer, on one device in one dtype."""

    drafter: torch.nn.Module
    target: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype

    @property
    def eos_token_id(self) -> int | None:
        """The end-of-sequence id (stops decoding)."""
        return self.tokenizer.eos_token_id


def load_model(path: str | os.PathLike, device: str = "cpu", dtype: str = "fp32") -> torch.nn.Module:
    """One causal LM from a local folder, in eval mode; FileNotFoundError if the folder is missing."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: no Hugging Face model here (config.json missing)")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], local_files_only=True)
    return model.to(device).eval()


def load_tokenizer(path: str | os.PathLike):
    """The tokenizer saved with a model folder (``tokenizer.json``), loaded offline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(path), local_files_only=True)


def load_models(models, roles: tuple[str, ...] = ("drafter", "target")) -> ModelPair:
    """The models of a :class:`nodes.config.ModelConfig` that ``roles`` name, each on its own
    device in its own dtype (a node loads only its own: the edge the target, a device the
    drafter; the other is None), with the shared tokenizer."""
    if set(roles) == {"drafter", "target"}:
        return load_pair(models.drafter, models.target, placement=models)
    (role,) = roles
    path = Path(getattr(models, role) or DEFAULT_DIR / role)
    device, dtype = getattr(models, f"{role}_device"), getattr(models, f"{role}_dtype")
    if dtype not in DTYPES:
        raise ValueError(f"{role} dtype must be one of {sorted(DTYPES)}")
    model = load_model(path, device, dtype)
    return ModelPair(model if role == "drafter" else None, model if role == "target" else None, load_tokenizer(path),
                     torch.device(device), DTYPES[dtype])


def load_pair(drafter_path: str | os.PathLike | None = None, target_path: str | os.PathLike | None = None,
              device: str = "cpu", dtype: str = "fp32", placement=None) -> ModelPair:
    """Load a drafter/target pair (default: the shipped pair) on ``device`` in ``dtype``, or per
    model as a :class:`nodes.config.ModelConfig` ``placement`` says; ValueError if their
    tokenizers differ."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}")
    drafter_path = Path(drafter_path or DEFAULT_DIR / "drafter")
    target_path = Path(target_path or DEFAULT_DIR / "target")
    for p in (drafter_path, target_path):
        if not (p / "config.json").exists():
            raise FileNotFoundError(f"{p}: no Hugging Face model here (config.json missing)")
    tok_t = load_tokenizer(target_path)
    tok_d = load_tokenizer(drafter_path)
    if tok_t.get_vocab() != tok_d.get_vocab():
        raise ValueError(f"{drafter_path} and {target_path} do not share a tokenizer")
    place = {r: (getattr(placement, f"{r}_device"), getattr(placement, f"{r}_dtype")) if placement else (device, dtype)
             for r in ("drafter", "target")}
    return ModelPair(drafter=load_model(drafter_path, *place["drafter"]), target=load_model(target_path, *place["target"]),
                     tokenizer=tok_t, device=torch.device(place["target"][0]), dtype=DTYPES[place["target"][1]])


def model_identity(config) -> dict:
    """What a decision head must match of a model: architecture, hidden size, vocabulary size,
    layers, and a fingerprint of the whole config (sha1 of its sorted JSON, 12 hex)."""
    import hashlib
    import json

    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    keep = {k: v for k, v in d.items() if k not in ("_name_or_path", "transformers_version", "torch_dtype", "dtype",
                                                    "_commit_hash", "use_cache")}
    return {"architecture": (d.get("architectures") or [d.get("model_type", "?")])[0],
            "hidden_size": int(d["hidden_size"]), "vocab_size": int(d["vocab_size"]),
            "layers": int(d.get("num_hidden_layers", 0)),
            "fingerprint": hashlib.sha1(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:12]}


def pair_identity(drafter_path: str | os.PathLike | None = None,
                  target_path: str | os.PathLike | None = None) -> dict[str, dict]:
    """``{"drafter": model_identity, "target": model_identity}`` of a pair on disk (reads the
    configs only; default: the shipped pair)."""
    from transformers import AutoConfig

    out = {}
    for role, path in (("drafter", drafter_path), ("target", target_path)):
        path = Path(path or DEFAULT_DIR / role)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path}: no Hugging Face model here (config.json missing)")
        out[role] = model_identity(AutoConfig.from_pretrained(path, local_files_only=True))
    return out
