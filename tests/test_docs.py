"""The documentation teaches what the code does: README.md and docs/*.md checked against it.

* every ```toml block loads as a config through the loader `archsmith run` uses
  (graph/config.py's ``load_config``); a block that is deliberately partial or invalid is
  left out by an HTML comment on the line before it, ``<!-- docs-test: skip (reason) -->``;
* every ``archsmith <command> [<sub-command>]`` written in code (fenced blocks and inline code)
  names a real command: ``archsmith <command> --help`` exits 0;
* the README's links to docs pages resolve, and docs/llm.md repeats the README's
  integration-tier line exactly (CI reads it from the README);
* ``mkdocs build --strict`` builds the site (mkdocs.yml at the repository root).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from archsmith.graph.cli import app
from archsmith.graph.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP_MARKER = re.compile(r"<!--\s*docs-test:\s*skip\b(?P<reason>.*?)-->")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
COMMAND = re.compile(r"(?<![\w./$-])archsmith(?P<args>(?:[ \t]+[^\s`]+)*)")
SUBCOMMAND = re.compile(r"[a-z][a-z0-9-]*")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    skip_reason: str | None  # the marker's reason when the line before is <!-- docs-test: skip (...) -->

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the line each opens on."""
    lines = path.read_text("utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence = opening["fence"]
        previous = next((line for line in reversed(lines[:index]) if line.strip()), "")
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence[0] * len(fence)):
            body.append(lines[end])
            end += 1
        marker = SKIP_MARKER.search(previous)
        blocks.append(Block(path, index + 1, opening["lang"].lower(), "\n".join(body) + "\n",
                            marker["reason"].strip() if marker else None))
        index = end + 1
    return blocks


def prose(path: Path) -> str:
    """The file without its fenced blocks (where inline code lives)."""
    lines = path.read_text("utf-8").splitlines()
    kept, inside = [], None
    for line in lines:
        opening = FENCE.match(line)
        if inside is None and opening is not None:
            inside = opening["fence"]
        elif inside is not None and line.strip().startswith(inside[0] * len(inside)):
            inside = None
        elif inside is None:
            kept.append(line)
    return "\n".join(kept)


def code_texts(path: Path) -> list[str]:
    """Everything written as code in a file: fenced blocks and inline code spans."""
    return [block.text for block in fenced_blocks(path)] + re.findall(r"`([^`\n]+)`", prose(path))


ALL_TOML = [block for path in DOC_FILES for block in fenced_blocks(path) if block.lang == "toml"]
# Marked blocks are left out of the parametrisation (not skipped: a skip needs an allow-listed reason).
TOML_BLOCKS = [block for block in ALL_TOML if block.skip_reason is None]


def test_the_docs_have_toml_blocks():
    assert len(TOML_BLOCKS) >= 10, [block.where for block in TOML_BLOCKS]


def test_excluded_toml_blocks_say_why():
    unexplained = [block.where for block in ALL_TOML
                   if block.skip_reason is not None and not re.fullmatch(r"\(.+\)", block.skip_reason)]
    assert not unexplained, f"<!-- docs-test: skip (reason) --> without a reason before: {unexplained}"


@pytest.mark.parametrize("block", TOML_BLOCKS, ids=lambda block: block.where)
def test_toml_block_loads_as_a_config(block: Block, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(block.text, "utf-8")
    try:
        load_config(config)
    except ConfigError as error:
        pytest.fail(f"the ```toml block at {block.where} is not a valid config:\n{error}", pytrace=False)


def documented_commands() -> dict[tuple[str, ...], str]:
    """``archsmith`` command paths written in the docs -> where one of them is written. A path
    that names no command is kept as written, so that its --help fails."""
    group = typer.main.get_command(app)  # Typer's click group (typer vendors click)
    found: dict[tuple[str, ...], str] = {}
    for path in DOC_FILES:
        for text in code_texts(path):
            for match in COMMAND.finditer(text):
                command = group
                names: list[str] = []
                for token in match["args"].split():
                    subcommands = getattr(command, "commands", None)  # a group has sub-commands
                    if subcommands is None or not SUBCOMMAND.fullmatch(token):
                        break
                    names.append(token)
                    if token not in subcommands:
                        break
                    command = subcommands[token]
                found.setdefault(tuple(names), str(path.relative_to(ROOT)))
    return found


COMMANDS = documented_commands()


def test_the_docs_name_the_commands():
    for expected in [("run",), ("resume",), ("check",), ("export",), ("config", "show"), ("train",),
                     ("trace",), ("view",), ("compare",), ("bench",), ("knowledge", "ingest"),
                     ("knowledge", "stats"), ("knowledge", "list"), ("knowledge", "search"),
                     ("knowledge", "sample")]:  # fmt: skip
        assert expected in COMMANDS, f"no doc mentions archsmith {' '.join(expected)}"


@pytest.mark.parametrize("names", sorted(COMMANDS), ids=lambda names: " ".join(names) or "(top level)")
def test_documented_command_exists(names: tuple[str, ...]):
    result = CliRunner().invoke(app, [*names, "--help"])
    assert result.exit_code == 0, (
        f"`archsmith {' '.join(names)} --help` exits {result.exit_code} (written in {COMMANDS[names]}):\n"
        f"{result.output}"
    )


def test_readme_links_to_docs_resolve():
    readme = (ROOT / "README.md").read_text("utf-8")
    links = re.findall(r"\]\((docs/[^)#\s]+\.md)(?:#[^)]*)?\)", readme)
    assert links, "the README links no docs page"
    missing = sorted({link for link in links if not (ROOT / link).is_file()})
    assert not missing, f"README.md links to missing pages: {missing}"


def test_docs_repeat_the_readme_integration_line():
    def quickstart(name: str) -> str:
        lines = (ROOT / "README.md").read_text("utf-8").splitlines()
        start = lines.index(f"<!-- quickstart:{name} -->")
        assert lines[start + 1].startswith("```bash")
        return lines[start + 2]

    line = quickstart("integration")
    llm_blocks = [block.text.strip() for block in fenced_blocks(ROOT / "docs" / "llm.md") if block.lang == "bash"]
    assert line in llm_blocks, "docs/llm.md must show the README's integration-tier line exactly"


def test_mkdocs_build_strict(tmp_path):
    missing = [name for name in ("mkdocs", "material") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"mkdocs build not checked: {', '.join(missing)} not importable (pip install -e '.[test]')")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "site" / "index.html").is_file()


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.toml")), ids=lambda path: path.name)
def test_every_example_config_loads(example: Path):
    """The examples the docs point users to are valid configs (running them is each feature's own test)."""
    try:
        load_config(example)
    except ConfigError as error:
        pytest.fail(f"{example.relative_to(ROOT)} is not a valid config:\n{error}", pytrace=False)
