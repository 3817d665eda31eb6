"""Tasks with checkable answers: the built-in arithmetic word problems and a GSM8K-style loader."""
from nodes.tasks.base import Problem, extract_answer, score
from nodes.tasks.arith import ArithTask
from nodes.tasks.gsm8k import load_gsm8k_jsonl

__all__ = ["Problem", "extract_answer", "score", "ArithTask", "load_gsm8k_jsonl"]
