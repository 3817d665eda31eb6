"""Built-in task: multi-step arithmetic word problems with checkable ``#### n`` answers.

Every step of the reference solution is written in one of several equivalent phrasings. Which
one is chosen follows a *style rule* of the context 80 % of the time (the opening by the name,
the connector by the running value mod 3, the step lead-in by item and step, the closing by
the answer's parity) and is random otherwise: a strong target learns the rules, a weak drafter
learns them partly, so they often disagree on wording (a *harmless* disagreement). The numbers
of each step are forced by the arithmetic (a drafter's wrong number changes the answer: an
*important* disagreement), and item or name slips are harmless too.

Problems are a pure function of (split, index): splits are disjoint by construction because the
generator for index i of split s is seeded with a hash of (s, i) and the train split excludes
every question text of validation and test.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Iterator

from nodes.tasks.base import Problem

NAMES = [("Tom", "he"), ("Ann", "she"), ("Sam", "he"), ("Mia", "she"), ("Leo", "he"), ("Eva", "she"),
         ("Max", "he"), ("Zoe", "she"), ("Ben", "he"), ("Ivy", "she")]
ITEMS = ["apples", "pens", "cards", "coins", "books", "shells", "stamps", "marbles"]
GAIN = [("buys", "buying"), ("finds", "finding"), ("gets", "getting"), ("wins", "winning")]
LOSS = [("gives away", "giving away"), ("loses", "losing"), ("sells", "selling"), ("uses", "using")]
MAX_NUMBER = 199  # every number in a problem, intermediate or final, lies in 0..MAX_NUMBER

# Equivalent phrasings.
START = ["{N} starts with {a} {I} .", "{N} begins with {a} {I} .", "At first {N} has {a} {I} ."]
CONNECT = ["so", "thus", "which means"]
THEN = ["Then", "Next", "After that"]
ANSWER = ["The answer is {r} .", "So the final count is {r} ."]
RULE_PROB = 0.8


def _pick(rng: random.Random, options: list[str], rule: int, rule_prob: float = RULE_PROB) -> str:
    """The phrasing the style rule names (index ``rule``), or a random one with prob. 1 − ``rule_prob``."""
    if rng.random() < rule_prob:
        return options[rule % len(options)]
    return rng.choice(options)


@dataclass(frozen=True)
class ArithTask:
    """The built-in task. ``n_steps_max``: 1–3 operations after the starting amount.
    ``rule_prob``: how often a phrasing follows its style rule (0: phrasing at random, a
    *style-blind* variant for training a drafter that does not share the target's wording)."""

    n_steps_max: int = 3
    name: str = "arith"
    rule_prob: float = RULE_PROB

    def problem(self, split: str, index: int) -> Problem:
        """Problem ``index`` of ``split`` (``train``, ``validation`` or ``test``), deterministic."""
        if split not in ("train", "validation", "test"):
            raise ValueError(f"unknown split {split!r}")
        seed = int.from_bytes(hashlib.sha256(f"{self.name}/{split}/{index}".encode()).digest()[:8], "little")
        rng = random.Random(seed)
        name, pron = rng.choice(NAMES)
        item = rng.choice(ITEMS)
        n_ops = rng.randint(1, self.n_steps_max)
        value = rng.randint(2, 25)
        q = [f"{name} has {value} {item} ."]
        name_idx = [n for n, _ in NAMES].index(name)
        item_idx = ITEMS.index(item)
        sol = [_pick(rng, START, name_idx, self.rule_prob).format(N=name, a=value, I=item)]
        first = True
        for step in range(n_ops):
            op = rng.choice(["+", "-", "x2"] if value <= 50 else ["-", "+"] if value < MAX_NUMBER - 15 else ["-"])
            lead = pron.capitalize() if first else _pick(rng, THEN, item_idx + step, self.rule_prob) + " " + pron
            conn = _pick(rng, CONNECT, value, self.rule_prob)
            if op == "+":
                b = rng.randint(1, min(15, MAX_NUMBER - value))
                verb, ing = rng.choice(GAIN)
                new = value + b
                q.append(f"{'Then ' + pron if not first else pron.capitalize()} {verb} {b} more .")
                sol.append(f"{lead} {verb} {b} more , {conn} {pron} has {value} + {b} = {new} {item} .")
            elif op == "-":
                b = rng.randint(1, max(1, min(15, value - 1)))
                verb, ing = rng.choice(LOSS)
                new = value - b
                q.append(f"{'Then ' + pron if not first else pron.capitalize()} {verb} {b} .")
                sol.append(f"{lead} {verb} {b} , {conn} {pron} has {value} - {b} = {new} {item} .")
            else:
                new = value * 2
                q.append(f"{'Then ' + pron if not first else pron.capitalize()} doubles the {item} .")
                sol.append(f"{lead} doubles them , {conn} {pron} has {value} * 2 = {new} {item} .")
            value = new
            first = False
        q.append(f"How many {item} does {name} have now ?")
        sol.append(_pick(rng, ANSWER, value, self.rule_prob).format(r=value))
        sol.append(f"#### {value}")
        prompt = "Question : " + " ".join(q) + " Answer :"
        return Problem(uid=f"{self.name}-{split}-{index}", prompt=prompt, solution=" " + " ".join(sol),
                       answer=str(value))

    def problems(self, split: str, n: int, start: int = 0) -> list[Problem]:
        """``n`` problems of ``split`` from index ``start``."""
        return [self.problem(split, i) for i in range(start, start + n)]

    def iter_train(self, start: int = 0) -> Iterator[Problem]:
        """Endless training problems, skipping any whose question appears in validation/test
        (of this task and of its default-phrasing variant, on which models are evaluated)."""
        default = ArithTask(self.n_steps_max, self.name)
        held_out = {p.prompt for t in {self, default} for s in ("validation", "test") for p in t.problems(s, 1000)}
        i = start
        while True:
            p = self.problem("train", i)
            i += 1
            if p.prompt not in held_out:
                yield p

    def vocabulary(self) -> list[str]:
        """Every word the task can produce (numbers 0..MAX_NUMBER included), for a word-level tokenizer."""
        words: set[str] = {str(i) for i in range(MAX_NUMBER + 1)}
        texts = [n for n, _ in NAMES] + [p for _, p in NAMES] + [p.capitalize() for _, p in NAMES] + ITEMS
        texts += [v for pair in GAIN + LOSS for v in pair]
        texts += START + CONNECT + THEN + ANSWER
        texts += ["Question : has more . Then doubles the How many does have now ? Answer : them , = + - * ####"]
        for t in texts:
            for w in t.replace("{N}", "").replace("{a}", "").replace("{I}", "").replace("{r}", "").split():
                words.add(w)
        return sorted(words)
