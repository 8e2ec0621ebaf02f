"""Every command shown in README.md and docs/*.md works exactly as written.

The fenced shell blocks (```bash / sh / shell / console, and unlabelled blocks that start with a
program) are extracted, and each block runs in order, command by command, with bash in one
shared copy of the repository (the commands write ``out/``, ``config.json``, stores), with
``.venv`` linked to this environment's. A command ending in ``&`` is a server: it is started in
the background, its ``--port`` waited for, and it is stopped when its block ends. Commands that
cannot run here are listed in ``NOT_RUN`` with the reason; a command that is neither run nor
listed fails ``test_every_command_is_run_or_listed``, and so does a listing that matches nothing.
New commands in the docs are picked up without touching this file.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGS = {"bash", "sh", "shell", "console"}
PROGRAMS = {
    "liqsignal", "python", "python3", "freqtrade", "bash", "cp", "pytest", "pip", "cd", "mkdir",
}  # fmt: skip
TIMEOUT_S = 300

#: commands not run here, by a regex on the command (``.venv/bin/`` stripped), with the reason
NOT_RUN: dict[str, str] = {
    r"^bash scripts/test\.sh": "runs this very test suite (CI runs it as its last step)",
    r"^(python -m )?pytest\b": "runs tests of this suite, which the suite itself runs",
    r"^python benchmarks/": "a benchmark: minutes on one year of bars or 50 markets; run by hand",
    r"^liqsignal alerts\b": "needs a Telegram bot token and chat; tests/alerts run the same "
    "command against a local Bot API",
    r"\[--": "a synopsis: the parts in [brackets] are optional, it is not one command",
    r"^freqtrade lookahead-analysis\b": "about 2-4 minutes; tests/freqtrade/test_lookahead.py "
    "runs it on the same data and asserts no bias",
    r"^freqtrade recursive-analysis\b": "about 2 minutes; tests/freqtrade/test_lookahead.py runs "
    "it with the same startups",
    r"^liqsignal evaluate --config\b": "the same program as `liqsignal evaluate` (run from the "
    "README, 40 s or more) on a calibrated file; tests/test_cli.py runs evaluate --config on one",
    r"^liqsignal demo --out out\b": "what `bash scripts/demo.sh` (README, run) runs: `demo` "
    "with its default --out out",
    r"^liqsignal download -m .* -e (bitfinex htx|binance bitfinex) .*--since 7d --liquidations": (
        "the venues themselves, over the internet; the offline block after it runs the same "
        "command against the Bitfinex and HTX replay venues"
    ),
}

#: servers that run until stopped, even when a doc shows them without ``&``
SERVER = re.compile(r"^(liqsignal replay|python -m liqsignal\.replay(\.ws)?)\s.*--port\s")

#: blocks (by their first command) that take long: run, but marked slow
SLOW = re.compile(r"freqtrade |liqsignal (evaluate|calibrate|demo|fit|map)|scripts/")


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    text: str  # as written (continuations joined)

    @property
    def key(self) -> str:
        """The command without its trailing comment and without a ``.venv/bin/`` prefix."""
        text = re.sub(r"\s+#.*$", "", self.text).strip()
        return re.sub(r"^\.venv/bin/", "", text)

    @property
    def background(self) -> bool:
        """Started in the background: written with ``&``, or a replay server the docs tell to
        start "in one terminal" (it serves until stopped)."""
        return self.key.endswith("&") or bool(SERVER.search(self.key))

    def reason(self) -> str | None:
        return next((why for pat, why in NOT_RUN.items() if re.search(pat, self.key)), None)


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    commands: tuple[Command, ...]

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def _is_command(line: str) -> bool:
    words = line.split()
    first = words[0] if words else ""
    ok = first in PROGRAMS or first.startswith((".venv/", "./"))
    return ok and not (len(words) > 1 and words[1].endswith(","))  # "freqtrade backtesting, ..."


def extract(paths: list[Path] = DOCS) -> list[Block]:
    blocks = []
    for path in paths:
        lines = path.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            m = re.match(r"^\s*```(\w*)\s*$", lines[i])
            if not m:
                i += 1
                continue
            lang, start, body = m.group(1).lower(), i + 1, []
            i += 1
            while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
                body.append(lines[i])
                i += 1
            i += 1
            cmds = _commands(path.name, start, body)
            # an unlabelled block is shell only when every line of it starts with a program
            # (output blocks, like a results table, do not)
            plain = lang == "" and all(_is_command(c.text) for c in cmds)
            if cmds and (lang in SHELL_LANGS or plain):
                blocks.append(Block(path.relative_to(ROOT).as_posix(), start + 1, tuple(cmds)))
    return blocks


def _commands(doc: str, start: int, body: list[str]) -> list[Command]:
    out: list[Command] = []
    buf: list[str] = []
    first = 0
    for k, raw in enumerate(body):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if not buf:
            first = start + k + 1
        buf.append(line[:-1].rstrip() if line.endswith("\\") else line)
        if not line.endswith("\\"):
            out.append(Command(doc, first, " ".join(buf)))
            buf = []
    return out


BLOCKS = extract()


def test_extraction_finds_the_known_commands():
    keys = {c.key for b in BLOCKS for c in b.commands}
    assert "liqsignal evaluate" in keys and "bash scripts/demo.sh" in keys
    assert any(k.startswith("freqtrade backtesting") for k in keys)


def test_every_command_is_run_or_listed():
    """Each command either runs in ``test_block`` or has a reason in ``NOT_RUN``; every
    ``NOT_RUN`` entry still matches a command (no stale excuses)."""
    runnable = [c for b in BLOCKS for c in b.commands if c.reason() is None]
    assert runnable, "nothing would run"
    used = {pat for b in BLOCKS for c in b.commands for pat in NOT_RUN if re.search(pat, c.key)}
    assert set(NOT_RUN) == used, f"NOT_RUN entries matching no command: {set(NOT_RUN) - used}"


def test_docs_hold_no_machine_paths():
    for path in DOCS:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            m = re.search(r"(?<![\w.~])/(work|home|root|Users|opt|srv)/[\w.-]+", line)
            assert m is None, f"{path.name}:{n}: absolute path of one machine: {m.group(0)}"


@pytest.fixture(scope="session")
def repo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tracked files of this checkout (as they are on disk) in a temp folder; ``.venv``
    links to the running environment so ``.venv/bin/liqsignal`` and ``liqsignal`` both work."""
    dest = tmp_path_factory.mktemp("repo")
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for f in filter(None, files):
        src = ROOT / f.decode()
        if src.is_file():
            (dest / f.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f.decode())
    (dest / ".venv").symlink_to(Path(sys.executable).parents[1], target_is_directory=True)
    return dest


def _env(repo: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PATH"] = f"{repo / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("LIQSIGNAL_TELEGRAM_TOKEN", None)
    return env


def _wait_port(port: int, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {proc.stderr.read()}")  # type: ignore[union-attr]
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                time.sleep(0.5)  # the port may be another process's: ours must still run
                if proc.poll() is not None:
                    err = proc.stderr.read() if proc.stderr else ""
                    raise AssertionError(f"server exited {proc.returncode} (port {port}): {err}")
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _params() -> list[object]:
    out: list[object] = []
    for b in BLOCKS:
        if all(c.reason() is not None for c in b.commands):
            continue
        marks = [pytest.mark.slow] if any(SLOW.search(c.key) for c in b.commands) else []
        out.append(pytest.param(b, id=b.id, marks=marks))
    return out


#: commands already run in this session (the same command in several places runs once)
_DONE: dict[str, str] = {}
#: blocks already run in this session, by id
_RAN: dict[str, Block] = {}


def _selected_blocks(session: pytest.Session) -> set[str]:
    """The ids of the blocks this session runs (after -m / -k selection)."""
    out = set()
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if getattr(item, "originalname", None) == "test_block" and callspec is not None:
            out.add(callspec.params["block"].id)
    return out


@pytest.mark.parametrize("block", _params())
def test_block(block: Block, repo_copy: Path, request: pytest.FixtureRequest) -> None:
    """``block`` runs in the state a reader has reached there: every block before it (README,
    then docs/ by name, top to bottom) that this session runs has run first, whatever the
    order of the tests (a block reads files an earlier one wrote)."""
    selected = _selected_blocks(request.session)
    for earlier in BLOCKS[: BLOCKS.index(block)]:
        if earlier.id in selected and earlier.id not in _RAN:
            _run_block(earlier, repo_copy)
    if block.id not in _RAN:
        _run_block(block, repo_copy)


def _run_block(block: Block, repo_copy: Path) -> None:
    _RAN[block.id] = block
    env = _env(repo_copy)
    servers: list[subprocess.Popen[str]] = []
    try:
        for cmd in block.commands:
            if cmd.reason() is not None:
                continue
            where = f"{cmd.doc}:{cmd.line}: {cmd.text}"
            if not cmd.background and cmd.key in _DONE:
                print(f"  same as {_DONE[cmd.key]}: {where}")
                continue
            if cmd.background:
                port = re.search(r"--port\s+(\d+)", cmd.key)
                assert port, f"{where}: a background command needs --port to be waited for"
                proc = subprocess.Popen(
                    ["bash", "-c", f"exec {cmd.key.removesuffix('&').strip()}"],
                    cwd=repo_copy, env=env, text=True, start_new_session=True,
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                )  # fmt: skip
                servers.append(proc)
                _wait_port(int(port.group(1)), proc)
                for f in re.findall(r"--(?:freqtrade-)?overlay\s+(\S+)", cmd.key):
                    end = time.monotonic() + 20
                    while not (repo_copy / f).is_file() and time.monotonic() < end:
                        time.sleep(0.1)
                continue
            t0 = time.monotonic()
            res = subprocess.run(
                ["bash", "-c", cmd.text], cwd=repo_copy, env=env, capture_output=True,
                text=True, timeout=TIMEOUT_S,
            )  # fmt: skip
            took = time.monotonic() - t0
            print(f"{took:6.1f} s  {where}")
            assert res.returncode == 0, f"{where}\nexit {res.returncode}\n{res.stderr[-3000:]}"
            assert "Traceback" not in res.stderr, f"{where}\n{res.stderr[-3000:]}"
            _DONE[cmd.key] = f"{cmd.doc}:{cmd.line}"
    finally:
        for proc in servers:
            _stop(proc)
