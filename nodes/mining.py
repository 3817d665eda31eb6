"""Mine decision-head labels the way AutoJudge does (garipovroma/autojudge).

Greedy speculative decoding runs on the task's training split. At each round's first mismatch
(draft token d where the target would write t), the draft token is substituted and the target
continues greedily to the end; the mismatch is *important* if the outcome (the final answer, or
whether a code task's tests pass) differs from the target's own or is wrong, *harmless*
otherwise. Decoding then goes on with t, so the
trajectory stays the target's. Per mismatch we keep: problem, output position, both tokens, the
target's hidden state that predicts the token, the drafter's hidden state that produced d, the
target probabilities of d and t, and the entropy.

Storage: one shard per block of problems (``shard-XXXXX.safetensors`` for the hidden states,
``shard-XXXXX.parquet`` for the rest) and ``manifest.json`` listing finished shards, so an
interrupted mining run resumes where it stopped.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nodes.decoding import Drafter, ExactMatch, Verifier, autoregressive_generate, verify_round
from nodes.evaluate import encode_prompt
from nodes.models import ModelPair, model_identity
from nodes.config import TaskConfig

log = logging.getLogger(__name__)


def mine_problem(pair: ModelPair, prompt: list[int], problem, gamma: int, max_new_tokens: int,
                 task=None) -> list[dict]:
    """Labelled first mismatches of one problem (see module docstring); ``task`` judges the
    outcome of an output (default: the built-in task's final answer)."""
    task = task or TaskConfig().make()
    d, v = Drafter(pair.drafter), Verifier(pair.target)
    d.reset()
    v.reset()
    seq = list(prompt)
    tok = pair.tokenizer
    ref = autoregressive_generate(pair.target, prompt, max_new_tokens, pair.eos_token_id)
    ref_outcome = task.outcome(tok.decode(ref, skip_special_tokens=True), problem)
    rows = []
    exact = ExactMatch()
    while len(seq) - len(prompt) < max_new_tokens:
        block = d.draft(seq, gamma, pair.eos_token_id)
        r = verify_round(v, exact, seq, block.tokens)
        first = r.decision.first_mismatch
        if first is not None:
            dtok, ttok = block.tokens[first], r.decision.next_token
            prefix = seq + block.tokens[:first]
            alt = autoregressive_generate(pair.target, prefix + [dtok], max_new_tokens - (len(prefix) - len(prompt)) - 1,
                                          pair.eos_token_id)
            alt_text = tok.decode(prefix[len(prompt):] + [dtok] + alt, skip_special_tokens=True)
            p = torch.softmax(r.ctx.target_logits[first].float(), -1)
            rows.append({"position": len(prefix) - len(prompt), "draft_token": dtok, "target_token": ttok,
                         "p_draft": float(p[dtok]), "p_top": float(p[ttok]),
                         "entropy": float(-(p * torch.log(p.clamp_min(1e-20))).sum()),
                         "important": bool(task.outcome(alt_text, problem) != ref_outcome
                                           or not task.correct(alt_text, problem)),
                         "target_hidden": r.ctx.target_hidden[first].float().numpy(),
                         "drafter_hidden": block.hidden[first].float().numpy()})
        new = r.new_tokens
        seq.extend(new)
        v.commit(len(seq))
        d.commit(len(seq))
        if pair.eos_token_id in new:
            break
    return rows


def mine(pair: ModelPair, out_dir: Path, n_problems: int, gamma: int = 4, shard_size: int = 50,
         max_new_tokens: int = 128, progress: bool = True, task: TaskConfig | None = None) -> dict:
    """Mine ``n_problems`` problems of the task (default: the built-in task's training split)
    into ``out_dir`` (resumable); returns the manifest."""
    task = task or TaskConfig(split="train")
    from safetensors.numpy import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    man_path = out_dir / "manifest.json"
    manifest = json.loads(man_path.read_text()) if man_path.exists() else {
        "version": 1, "task": task.kind, "task_file": task.file, "split": task.split, "gamma": gamma, "shards": [],
        "seconds": 0.0, "labelled": 0,
        "pair": {"drafter": model_identity(pair.drafter.config), "target": model_identity(pair.target.config)}}
    here = {"drafter": model_identity(pair.drafter.config), "target": model_identity(pair.target.config)}
    if manifest.get("pair") and manifest["pair"] != here:
        raise ValueError(f"{out_dir} holds labels mined with another drafter/target pair; mine into a new folder")
    done = {s["start"] for s in manifest["shards"]}
    judge = task.make()
    starts = [s for s in range(0, n_problems, shard_size) if s not in done]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_problems, initial=n_problems - len(starts) * shard_size, unit="problem", desc="mining")
    for start in starts:
        t0 = time.perf_counter()
        rows = []
        end = min(start + shard_size, n_problems)
        for i, p in zip(range(start, end), judge.problems(task.split, end - start, task.start_index + start)):
            for r in mine_problem(pair, encode_prompt(pair, p, task.chat_template), p, gamma, max_new_tokens, judge):
                rows.append({"problem": i, **r})
            if bar:
                bar.update(1)
        name = f"shard-{start:05d}"
        if rows:
            save_file({"target_hidden": np.stack([r.pop("target_hidden") for r in rows]),
                       "drafter_hidden": np.stack([r.pop("drafter_hidden") for r in rows])},
                      str(out_dir / f"{name}.safetensors"))
            pd.DataFrame(rows).to_parquet(out_dir / f"{name}.parquet")
        secs = time.perf_counter() - t0
        manifest["shards"].append({"start": start, "name": name, "rows": len(rows), "seconds": secs})
        manifest["seconds"] += secs
        manifest["labelled"] += len(rows)
        man_path.write_text(json.dumps(manifest, indent=2) + "\n")  # written last: a shard counts once complete
    if bar:
        bar.close()
    manifest["seconds_per_label"] = manifest["seconds"] / max(1, manifest["labelled"])
    man_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_dataset(out_dir: Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(rows, target hidden [N, H], drafter hidden [N, Hd]) of a mined dataset."""
    from safetensors.numpy import load_file

    manifest = json.loads((out_dir / "manifest.json").read_text())
    frames, th, dh = [], [], []
    for s in sorted(manifest["shards"], key=lambda s: s["start"]):
        if not s["rows"]:
            continue
        frames.append(pd.read_parquet(out_dir / f"{s['name']}.parquet"))
        t = load_file(str(out_dir / f"{s['name']}.safetensors"))
        th.append(t["target_hidden"])
        dh.append(t["drafter_hidden"])
    return pd.concat(frames, ignore_index=True), np.concatenate(th), np.concatenate(dh)
