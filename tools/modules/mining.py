"""Find ``nn.Module`` classes in source code without running it.

A *source* is a directory, a ``.py`` file or the name of an installed package or module
(``torch.nn``, ``torchvision.models``). Package names are resolved to files with
``importlib.util.find_spec`` of the top-level name only (finding a dotted name would import its
parents): nothing of the mined code runs in this process. Each file is parsed with ``ast``; a
file that does not parse is skipped with its error.

A class is a module when one of its bases is ``nn.Module``, ``torch.nn.Module`` or ``Module``,
or a class found in the mined files that is a module (``Conv2d -> _ConvNd -> Module``). Each
module gets a :class:`ModuleRecord`: constructor arguments, ``forward`` signature, class source
and provenance. Probing (building and running each public class) happens in the sandbox, see
:mod:`archsmith.tools.modules.probe` and :func:`probe_records`.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

__all__ = [
    "ArgInfo", "MiningError", "MiningReport", "ModuleRecord", "ResolvedSource", "SkippedFile",
    "mine", "parse_sources", "probe_records", "resolve_source",
]  # fmt: skip

MODULE_ROOTS = frozenset({"nn.Module", "torch.nn.Module", "Module", "torch.nn.modules.module.Module"})
PROBE_TASK = "archsmith.tools.modules.probe:probe_module"
_SKIP_DIRS = {"__pycache__", ".git", ".venv", "node_modules", ".tox", ".mypy_cache"}

ProbeStatus = Literal["ok", "needs_args", "import_failed", "build_failed", "forward_failed", "failed"]


class MiningError(ValueError):
    """A source that cannot be mined (missing path, unknown package): bad input, not a crash."""


class ArgInfo(BaseModel):
    """One ``__init__`` argument: default and annotation as source text (None: absent)."""

    name: str
    kind: Literal["positional", "keyword_only", "var_positional", "var_keyword"] = "positional"
    default: str | None = None
    annotation: str | None = None
    required: bool = False


class ModuleRecord(BaseModel):
    """A mined ``nn.Module`` class: signature, source, provenance and (when probed) the probe."""

    name: str = Field(description="Qualified name: import path of its module + class name.")
    class_name: str
    module: str = Field(description="Import path of the file's module.")
    import_root: str | None = Field(default=None, description="Directory to put on sys.path (directory sources).")
    source: str = Field(default="", description="The source as given (package name or path).")
    package: str
    version: str | None = None
    licence: str | None = None
    path: str = Field(description="File path relative to the package root.")
    line: int
    bases: list[str] = Field(default_factory=list)
    init_args: list[ArgInfo] = Field(default_factory=list)
    init_from: str | None = Field(default=None, description="The mined class whose __init__ it inherits.")
    required_args: list[str] = Field(default_factory=list)
    forward_signature: str | None = None
    class_source: str = ""
    source_hash: str = ""
    private: bool = False
    abstract: bool = False
    probe: dict[str, Any] | None = None

    @property
    def status(self) -> str:
        """``ok``, ``needs_args``, ``*_failed``, ``private`` or ``not probed``."""
        if self.probe is not None:
            return str(self.probe.get("status") or "failed")
        return "private" if self.private or self.abstract else "not probed"


class SkippedFile(BaseModel):
    path: str
    error: str


class MiningReport(BaseModel):
    """What one :func:`mine` call found."""

    sources: list[str] = Field(default_factory=list)
    files_parsed: int = 0
    skipped: list[SkippedFile] = Field(default_factory=list)
    modules: list[ModuleRecord] = Field(default_factory=list)
    probed: bool = False
    wall_s: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for record in self.modules if record.status == status)

    @property
    def probed_ok(self) -> int:
        return self.count("ok")

    @property
    def needs_args(self) -> int:
        return self.count("needs_args")

    @property
    def failed(self) -> int:
        return sum(1 for r in self.modules if r.probe is not None and r.status not in ("ok", "needs_args"))


class ResolvedSource(BaseModel):
    """A source resolved to files: each file with the import path of its module."""

    source: str
    package: str
    root: str = Field(description="The directory file paths are relative to (above the top-level package).")
    import_root: str | None = None
    files: list[tuple[str, str]] = Field(default_factory=list, description="(absolute path, module import path)")
    version: str | None = None
    licence: str | None = None


class TaskRunner(Protocol):
    def run(self, task: str, payload: dict[str, Any], timeout_s: float | None = None) -> Any: ...


# --- resolving sources ---------------------------------------------------------------------------


def _walk_py(directory: Path) -> list[Path]:
    found: list[Path] = []
    for current, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        found.extend(Path(current) / f for f in sorted(files) if f.endswith(".py"))
    return found


def _dotted(parts: Iterable[str]) -> str:
    return ".".join(p for p in parts if p)


def _module_name(prefix: str, relative: Path) -> str:
    parts = list(relative.with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return _dotted([prefix, *parts])


def _package_dir_root(directory: Path) -> tuple[Path, str]:
    """The sys.path entry above ``directory`` and its dotted package name (walking up __init__.py)."""
    parts: list[str] = []
    current = directory
    while (current / "__init__.py").is_file():
        parts.insert(0, current.name)
        current = current.parent
    return current, _dotted(parts)


def distribution_info(top_level: str) -> tuple[str | None, str | None]:
    """(version, licence) of the installed distribution that provides ``top_level``, if any."""
    names = importlib.metadata.packages_distributions().get(top_level) or [top_level]
    for name in names:
        try:
            meta = importlib.metadata.metadata(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        licence = meta.get("License-Expression") or meta.get("License")
        if licence and ("\n" in licence or len(licence) > 80):  # a whole licence text pasted in
            licence = licence.strip().splitlines()[0][:80]
        if not licence or licence.upper() == "UNKNOWN":
            classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
            licence = ", ".join(classifiers) or None
        return meta.get("Version"), licence.strip() if licence else None
    return None, None


def resolve_source(source: str) -> ResolvedSource:
    """The files of a directory, a ``.py`` file or an installed package/module (not imported)."""
    path = Path(source).expanduser()
    if path.is_dir():
        directory = path.resolve()
        import_root, package = _package_dir_root(directory)
        files = [(str(f), _module_name(package, f.relative_to(directory))) for f in _walk_py(directory)]
        return ResolvedSource(source=source, package=package or directory.name, root=str(import_root),
                              import_root=str(import_root), files=files)
    if path.is_file() and path.suffix == ".py":
        file = path.resolve()
        import_root, package = _package_dir_root(file.parent)
        module = _module_name(package, Path(file.name))
        return ResolvedSource(source=source, package=package or file.stem, root=str(import_root),
                              import_root=str(import_root), files=[(str(file), module)])
    if os.sep in source or source.endswith(".py") or path.exists():
        raise MiningError(f"not a directory or .py file: {source}")
    parts = source.split(".")
    if not all(part.isidentifier() for part in parts):
        raise MiningError(f"no such path or package name: {source}")
    try:
        spec = importlib.util.find_spec(parts[0])  # top level only: finds without importing
    except (ImportError, ValueError) as error:
        raise MiningError(f"cannot find package {parts[0]!r}: {error}") from None
    if spec is None:
        raise MiningError(f"no such path or installed package: {source}")
    version, licence = distribution_info(parts[0])
    if not spec.submodule_search_locations:  # a single-file module
        if len(parts) > 1 or not spec.origin or not spec.origin.endswith(".py"):
            raise MiningError(f"{source}: not a package or Python source module")
        file = Path(spec.origin)
        return ResolvedSource(source=source, package=source, root=str(file.parent), files=[(str(file), source)],
                              version=version, licence=licence)
    for location in spec.submodule_search_locations:
        base = Path(location).joinpath(*parts[1:])
        if base.is_dir():
            files = [(str(f), _module_name(source, f.relative_to(base))) for f in _walk_py(base)]
            return ResolvedSource(source=source, package=source, root=str(Path(location).parent), files=files,
                                  version=version, licence=licence)
        if base.with_suffix(".py").is_file():
            file = base.with_suffix(".py")
            return ResolvedSource(source=source, package=source, root=str(Path(location).parent),
                                  files=[(str(file), source)], version=version, licence=licence)
    raise MiningError(f"{parts[0]} has no submodule {'.'.join(parts[1:])!r}")


# --- parsing -------------------------------------------------------------------------------------


def _classes(body: Sequence[ast.stmt]) -> Iterable[ast.ClassDef]:
    """Module-level classes, including those under if/try/with blocks."""
    for node in body:
        if isinstance(node, ast.ClassDef):
            yield node
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for block in ("body", "orelse", "finalbody", "handlers"):
                for item in getattr(node, block, []) or []:
                    inner = item.body if isinstance(item, ast.ExceptHandler) else [item]
                    yield from _classes(inner)


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local names bound by ``from x import Y as Z``: Z -> Y."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                names[alias.asname or alias.name] = alias.name
    return names


def _method(node: ast.ClassDef, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == name:
            return item
    return None


def _text(node: ast.AST | None) -> str | None:
    return None if node is None else ast.unparse(node)


def init_arguments(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ArgInfo]:
    """The arguments of ``__init__`` (without ``self``), defaults and annotations as source."""
    spec = function.args
    positional = [*spec.posonlyargs, *spec.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(spec.defaults)) + list(spec.defaults)
    args = [
        ArgInfo(name=a.arg, default=_text(d), annotation=_text(a.annotation), required=d is None)
        for a, d in zip(positional, defaults)
    ][1:]  # self
    if spec.vararg:
        args.append(ArgInfo(name=spec.vararg.arg, kind="var_positional", annotation=_text(spec.vararg.annotation)))
    for a, d in zip(spec.kwonlyargs, spec.kw_defaults):
        args.append(ArgInfo(name=a.arg, kind="keyword_only", default=_text(d), annotation=_text(a.annotation),
                            required=d is None))
    if spec.kwarg:
        args.append(ArgInfo(name=spec.kwarg.arg, kind="var_keyword", annotation=_text(spec.kwarg.annotation)))
    return args


def _signature(function: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    returns = f" -> {ast.unparse(function.returns)}" if function.returns else ""
    return f"{function.name}({ast.unparse(function.args)}){returns}"


def _is_abstract(node: ast.ClassDef) -> bool:
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for decorator in item.decorator_list:
                if (_text(decorator) or "").split(".")[-1] == "abstractmethod":
                    return True
    return False


class _Found:
    """A class seen while parsing, before we know whether it is a module."""

    def __init__(self, node: ast.ClassDef, text: str, module: str, file: str, resolved: ResolvedSource,
                 aliases: dict[str, str]) -> None:
        self.node, self.text, self.module, self.file, self.resolved, self.aliases = node, text, module, file, resolved, aliases
        self.bases = [ast.unparse(b) for b in node.bases]
        self.is_module = any(b in MODULE_ROOTS for b in self.bases)


def parse_sources(resolved: Sequence[ResolvedSource]) -> MiningReport:
    """Parse every file of the resolved sources and return the modules found (no probing)."""
    report = MiningReport(sources=[r.source for r in resolved])
    found: list[_Found] = []
    seen_files: set[str] = set()
    for source in resolved:
        for file, module in source.files:
            if file in seen_files:
                continue
            seen_files.add(file)
            try:
                text = Path(file).read_text(encoding="utf-8")
                tree = ast.parse(text, filename=file)
            except (SyntaxError, UnicodeDecodeError, OSError, ValueError) as error:
                report.skipped.append(SkippedFile(path=file, error=f"{type(error).__name__}: {error}"))
                continue
            report.files_parsed += 1
            aliases = _aliases(tree)
            found.extend(_Found(node, text, module, file, source, aliases) for node in _classes(tree.body))
    by_name: dict[str, list[_Found]] = {}
    for item in found:
        by_name.setdefault(item.node.name, []).append(item)

    def base_classes(item: _Found) -> list[_Found]:
        result = []
        for base in item.bases:
            simple = base.split(".")[-1]
            simple = item.aliases.get(simple, simple) if "." not in base else simple
            candidates = by_name.get(simple, [])
            same_file = [c for c in candidates if c.file == item.file and c is not item]
            result.extend(same_file or [c for c in candidates if c is not item])
        return result

    changed = True
    while changed:  # propagate "is a module" down the mined class hierarchy
        changed = False
        for item in found:
            if not item.is_module and any(b.is_module for b in base_classes(item)):
                item.is_module = changed = True
    for item in found:
        if item.is_module:
            report.modules.append(_record(item, base_classes))
    return report


def _inherited(item: _Found, base_classes: Callable[[_Found], list[_Found]], method: str):
    """(defining class, method node) for ``method`` on ``item`` or its nearest mined base."""
    queue, seen = [item], set()
    while queue:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        node = _method(current.node, method)
        if node is not None:
            return current, node
        queue.extend(b for b in base_classes(current) if b.is_module)
    return None, None


def _record(item: _Found, base_classes: Callable[[_Found], list[_Found]]) -> ModuleRecord:
    resolved = item.resolved
    node = item.node
    class_source = ast.get_source_segment(item.text, node, padded=False) or ""
    init_owner, init = _inherited(item, base_classes, "__init__")
    _, forward = _inherited(item, base_classes, "forward")
    args = init_arguments(init) if init is not None else []
    private = node.name.startswith("_")
    return ModuleRecord(
        name=f"{item.module}.{node.name}",
        class_name=node.name,
        module=item.module,
        import_root=resolved.import_root,
        source=resolved.source,
        package=resolved.package,
        version=resolved.version,
        licence=resolved.licence,
        path=os.path.relpath(item.file, resolved.root),
        line=node.lineno,
        bases=item.bases,
        init_args=args,
        init_from=None if init_owner in (None, item) else f"{init_owner.module}.{init_owner.node.name}",
        required_args=[a.name for a in args if a.required],
        forward_signature=_signature(forward) if forward is not None else None,
        class_source=class_source,
        source_hash=hashlib.sha256(class_source.encode("utf-8")).hexdigest()[:16],
        private=private,
        abstract=private or _is_abstract(node),
    )


# --- probing -------------------------------------------------------------------------------------


def probe_payload(record: ModuleRecord, torch_threads: int = 1) -> dict[str, Any]:
    """The payload of :func:`archsmith.tools.modules.probe.probe_module` for one record."""
    roots = [record.import_root] if record.import_root else []
    return {"module": record.module, "class_name": record.class_name, "python_path": roots,
            "read_paths": roots, "torch_threads": torch_threads}


def probe_one(record: ModuleRecord, runner: TaskRunner, timeout_s: float = 20.0) -> dict[str, Any]:
    """Probe one record in the runner; the failure of the run itself is a result too."""
    result = runner.run(PROBE_TASK, probe_payload(record), timeout_s=timeout_s)
    value = dict(getattr(result, "value", None) or {})
    if value.get("status"):
        return value
    reason = "timeout" if getattr(result, "timed_out", False) else "failed"
    return {"status": "failed", "stage": reason, "error_type": result.error_type,
            "error_message": result.short_error(), "duration_s": result.duration_s}


def probe_records(records: Sequence[ModuleRecord], runner: TaskRunner, timeout_s: float = 20.0,
                  workers: int = 1, progress: Callable[[ModuleRecord], None] | None = None) -> None:
    """Probe every public, non-abstract record in place (one sandbox call each)."""
    todo = [r for r in records if not (r.private or r.abstract)]

    def one(record: ModuleRecord) -> None:
        record.probe = probe_one(record, runner, timeout_s)
        if progress is not None:
            progress(record)

    if workers <= 1:
        for record in todo:
            one(record)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, todo))


def mine(sources: Sequence[str], *, runner: TaskRunner | None = None, timeout_s: float = 20.0, workers: int = 1,
         progress: Callable[[ModuleRecord], None] | None = None) -> MiningReport:
    """Mine ``sources``; with a ``runner`` (a Sandbox), probe each public module in it.

    Raises :class:`MiningError` for a source that does not exist (before parsing anything).
    """
    started = time.perf_counter()
    resolved = [resolve_source(source) for source in sources]
    report = parse_sources(resolved)
    if runner is not None:
        probe_records(report.modules, runner, timeout_s, workers, progress)
        report.probed = True
    report.wall_s = time.perf_counter() - started
    return report
