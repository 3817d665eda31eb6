"""Tasks with checkable answers: the built-in arithmetic word problems, GSM8K-format files and
HumanEval-format code tasks (``registry.make_task``)."""
from nodes.tasks.base import Problem, extract_answer, score
from nodes.tasks.arith import ArithTask
from nodes.tasks.gsm8k import load_gsm8k_jsonl
from nodes.tasks.registry import TASK_KINDS, make_task

__all__ = ["Problem", "extract_answer", "score", "ArithTask", "load_gsm8k_jsonl", "TASK_KINDS", "make_task"]
