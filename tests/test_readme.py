"""The README is a landing page and the pages under docs/ hold the reference: the README stays
short, every relative link and every repository path named in README.md and docs/*.md exists,
every ``wisv``/``make`` command they show is one the command line knows, and the README's quick
commands run."""
from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
MAX_README_LINES = 200
# The topic pages the README links to (issue 21); the generated reference stays generated.
TOPIC_PAGES = ("traces.md", "links-and-topologies.md", "protocols.md", "head.md", "bring-your-own-pair.md",
               "reports-and-sweeps.md", "benchmarks.md", "decoding-performance.md", "spec.md")
TOP_LEVEL = ("channel_models", "traces", "topologies", "nodes", "runs", "wisv", "tests", "benchmarks",
             "examples", "scripts", "docs")

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")


def _prose(text: str) -> str:
    """The page without its fenced code blocks (links and spans inside them are code, not links)."""
    return FENCE.sub("", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    h = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return h.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown page (repeats get -1, -2 … as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for line in _prose(page.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            s = _slug(m.group(1))
            n = seen.get(s, 0)
            out.add(s if n == 0 else f"{s}-{n}")
            seen[s] = n + 1
    return out


def test_readme_is_a_landing_page():
    """Under 200 lines, the generated headline block in place, and every page of docs/ linked."""
    text = README.read_text()
    assert len(text.splitlines()) < MAX_README_LINES, "README.md is the landing page: move reference text to docs/"
    assert text.count("<!-- paper-eval:begin -->") == 1 and text.count("<!-- paper-eval:end -->") == 1
    linked = {Path(t.split("#")[0]).name for t in LINK.findall(_prose(text)) if t.startswith("docs/")}
    assert set(TOPIC_PAGES) <= {p.name for p in DOCS.glob("*.md")}
    assert {p.name for p in DOCS.glob("*.md")} - linked == set(), "a page under docs/ that the README does not link"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_images_resolve(page):
    """Every relative link or image of the page points at an existing file, and at an existing
    heading when it names an anchor."""
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with that anchor")
    assert broken == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_repository_paths_named_in_the_page_exist(page):
    """A path in backticks that starts at a top-level folder (`nodes/oracle.py`,
    `nodes/pretrained/default/head-*.safetensors`) names something in the repository."""
    missing = []
    for span in CODE_SPAN.findall(page.read_text()):
        for word in span.split():
            word = word.strip(",;:()")
            if not re.fullmatch(r"[\w.*-]+(/[\w.*-]+)+/?", word) or word.split("/")[0] not in TOP_LEVEL:
                continue
            if word.startswith("runs/out/") or "<" in word:
                continue  # outputs a command writes, not files in the repository
            if not list(REPO.glob(word.rstrip("/"))):
                missing.append(word)
    assert missing == []


def _commands(page: Path, spans: bool = True) -> list[str]:
    """Every ``wisv …`` and ``make …`` command shown on the page: the lines of its shell blocks
    and (``spans``) its inline code spans, without ``sudo``, ``.venv/bin/`` and trailing comments."""
    text = page.read_text()
    lines = []
    for lang, body in FENCE.findall(text):
        if lang in ("sh", "bash", "shell", ""):
            lines += body.replace("\\\n", " ").splitlines()
    if spans:
        lines += CODE_SPAN.findall(_prose(text))
    out = []
    for line in lines:
        line = re.sub(r"\s#\s.*$", "", line).strip()
        line = re.sub(r"^(sudo\s+)?(\.venv/bin/)?", "", line)
        if re.match(r"^(wisv|make)\s+\S", line):
            out.append(line)
    return out


def _argv(command: str) -> list[str]:
    """The command's arguments after ``wisv``, optional parts (``[--json]``) taken as given and
    ellipses dropped."""
    return [w for w in shlex.split(command.replace("[", " ").replace("]", " "))[1:] if w != "…"]


def _subcommand(argv: list[str]):
    """The leading subcommand names of ``argv`` (``trace import``, ``node keys``) and their parser."""
    from wisv.cli import build_parser

    parser, path = build_parser(), []
    for word in argv:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            break
        parser = subs[0].choices[word]
        path.append(word)
    return tuple(path), parser


ALL_COMMANDS = sorted({c for p in PAGES for c in _commands(p)})
BLOCK_COMMANDS = sorted({c for p in PAGES for c in _commands(p, spans=False)})


def test_pages_show_commands():
    readme = _commands(README)
    assert {"make demo", "make test"} <= set(readme) and any(c.startswith("wisv run") for c in readme)
    assert len(ALL_COMMANDS) > 40  # the reference pages hold the rest


@pytest.mark.parametrize("command", [c for c in BLOCK_COMMANDS if c.startswith("wisv ")])
def test_every_wisv_command_in_a_block_parses(command):
    """A command shown as a line to type is accepted as shown: the subcommand exists, every option
    is one it knows, every choice is valid, nothing required is missing (nothing is run)."""
    from wisv.cli import build_parser

    try:
        build_parser().parse_args(_argv(command))
    except SystemExit as e:  # argparse's way of saying no
        pytest.fail(f"`{command}` does not parse (exit {e.code})")


@pytest.mark.parametrize("command", [c for c in ALL_COMMANDS if c.startswith("wisv ")])
def test_every_wisv_command_named_in_prose_exists(command):
    """A command named anywhere (`wisv pcap RUN_DIR --json`, `wisv link cleanup`) names a subcommand
    the command line has, and only options that subcommand knows (every subcommand's `--help` runs
    in tests/test_architecture.py)."""
    argv = _argv(command)
    path, parser = _subcommand(argv)
    assert path and path == tuple(argv[:len(path)]), f"`{command}`: no such subcommand"
    known = {o for a in parser._actions for o in a.option_strings}
    assert {w.split("=")[0] for w in argv if re.match(r"^--?[a-zA-Z]", w)} <= known, command


def test_every_make_target_shown_exists():
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
    shown = {c.split()[1] for c in ALL_COMMANDS if c.startswith("make ")}
    assert shown and shown <= targets, shown - targets
    if shutil.which("make"):  # and make reads them: a dry run prints the recipe, runs nothing
        for t in sorted(shown):
            r = subprocess.run(["make", "-n", t], cwd=str(REPO), capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and r.stdout.strip(), (t, r.stderr)


def _readme_block(lang: str) -> list[str]:
    return [body for kind, body in FENCE.findall(README.read_text()) if kind == lang]


def test_scripted_example_is_the_example_file():
    """The README's Python block is examples/script_a_run.py's main() (imports aside), so the two
    cannot drift apart."""
    (block,) = _readme_block("python")
    example = (REPO / "examples" / "script_a_run.py").read_text()
    body = textwrap.dedent(example.split("def main() -> None:\n", 1)[1].split("\n\n\nif __name__", 1)[0])
    code = [ln for ln in block.splitlines() if not ln.startswith(("from ", "import "))]
    assert "\n".join(code).strip() == body.strip()
    imports = [ln for ln in block.splitlines() if ln.startswith(("from ", "import "))]
    assert imports and all(ln in example for ln in imports)


def _wisv(argv: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    return subprocess.run([sys.executable, "-m", "wisv.cli", *argv], cwd=str(REPO), capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_readme_quick_commands_run(tmp_path):
    """The README's shell commands that need no root run as shown, in order, with two changes so
    the suite stays quick and leaves the checkout clean: paths under runs/out/ go to a temporary
    folder, and every run decodes one problem per protocol (`--problems 1`)."""
    quick = [c for body in _readme_block("sh") for c in body.replace("\\\n", " ").splitlines()
             if c.startswith(".venv/bin/wisv ")]
    assert len(quick) >= 5
    for command in quick:
        argv = [str(tmp_path / w) if w.startswith("runs/out/") else w for w in _argv(re.sub(r"\s#\s.*$", "", command))]
        if argv[0] in ("run", "simulate") and "--schema" not in argv:
            argv = [w for i, w in enumerate(argv) if w != "--problems" and argv[i - 1] != "--problems"]
            argv += ["--problems", "1"] + ([] if "-o" in argv else ["-o", str(tmp_path / "sim")])
        r = _wisv(argv)
        assert r.returncode == 0, (command, r.stderr[-2000:])
        if argv[:2] == ["trace", "show"]:
            assert json.loads(r.stdout.strip().splitlines()[-1])["duration_s"] > 0
        if argv[:2] == ["run", "--schema"]:
            assert r.stdout == (DOCS / "spec.md").read_text()  # the generated page is what the schema says
        if argv[0] == "report":
            assert (Path(argv[1]) / "report.md").is_file()
