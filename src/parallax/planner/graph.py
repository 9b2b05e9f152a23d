"""A knowledge graph of a repository at one revision, read straight from git objects.

Nodes: files (with their language and lines), Python modules, definitions (top-level classes and
functions), tests. Edges:
- imports: Python resolved exactly by the stdlib parser (`ast`), relative imports included;
  JavaScript / TypeScript `import`, `export ... from` and `require()` of relative paths, parsed
  with tree-sitter; other languages are files without import edges;
- tests → the files they import (and, transitively, exercise);
- definitions → the files that import them by name (`from m import Name`);
- co-change: files changed in the same commits over recent history, each commit weighing
  1/(n-1) per pair so a sweeping commit says less than a focused one (commits touching more
  than 50 files are skipped).

Reading from git objects (`git ls-tree`, `git cat-file --batch`) works on bare mirrors and on
any past revision, which is what the decomposition benchmark needs; uncommitted changes are not
in the graph. Graphs are cached per revision under the git directory.
"""

from __future__ import annotations

import ast
import json
import posixpath
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PY = (".py", ".pyi")
JS = (".js", ".jsx", ".mjs", ".cjs", ".ts", ".tsx", ".mts", ".cts")
CODE = (*PY, *JS, ".go", ".rs", ".java", ".kt", ".rb", ".php", ".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".swift")
DOCS = (".md", ".rst", ".toml", ".json", ".yaml", ".yml")
MAX_COMMIT_FILES = 50
MAX_BLOB = 2_000_000
BYTES_PER_LINE = 32  # only to estimate the lines of a file whose blob was not read


def language(path: str) -> str:
    ext = posixpath.splitext(path)[1]
    if ext in PY:
        return "python"
    if ext in (".ts", ".tsx", ".mts", ".cts"):
        return "typescript"
    if ext in JS:
        return "javascript"
    return ext.lstrip(".") or "other"


def line_count(info: dict[str, Any]) -> int:
    """A file's lines (counted when the graph was built; estimated from its size in bytes for
    files not read, or graphs cached before lines were counted). At least 1."""
    counted = info.get("lines")
    if isinstance(counted, int):
        return max(1, counted)
    return max(1, int(info.get("size", 0)) // BYTES_PER_LINE)


def is_test(path: str) -> bool:
    name = posixpath.basename(path)
    parts = path.split("/")
    return (
        name.startswith("test_")
        or name.endswith(("_test.py", "_test.go"))
        or any(f".{k}." in name for k in ("test", "spec"))
        or any(p in ("tests", "test", "__tests__", "testing") for p in parts[:-1])
    )


@dataclass
class CodeGraph:
    rev: str
    # path -> {lang, size, test, lines}
    files: dict[str, dict[str, Any]] = field(default_factory=dict[str, dict[str, Any]])
    imports: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    definitions: dict[str, list[str]] = field(default_factory=dict[str, list[str]])  # path -> names
    users: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # "path::Name" -> files
    cochange: dict[tuple[str, str], float] = field(default_factory=dict[tuple[str, str], float])
    changes: dict[str, int] = field(default_factory=dict[str, int])  # commits per file in the history read
    build_s: float = 0.0

    # Queries

    def deps(self, path: str) -> list[str]:
        return sorted(self.imports.get(path, ()))

    def dependents(self, path: str) -> list[str]:
        return sorted(f for f, targets in self.imports.items() if path in targets)

    def coupled(self, path: str, limit: int = 20) -> list[tuple[str, float]]:
        pairs = [(b if a == path else a, w) for (a, b), w in self.cochange.items() if path in (a, b)]
        return sorted(pairs, key=lambda p: (-p[1], p[0]))[:limit]

    def tests_for(self, path: str) -> list[str]:
        """Tests that import `path`, directly or through other modules."""
        reverse: dict[str, set[str]] = defaultdict(set)
        for source, targets in self.imports.items():
            for target in targets:
                reverse[target].add(source)
        seen, stack = {path}, [path]
        while stack:
            for user in reverse.get(stack.pop(), ()):
                if user not in seen:
                    seen.add(user)
                    stack.append(user)
        return sorted(f for f in seen if f != path and self.files.get(f, {}).get("test"))

    def cycles(self) -> list[list[str]]:
        """Import cycles: strongly connected components with more than one file."""
        return [sorted(c) for c in strongly_connected(self.files, self.imports) if len(c) > 1]

    def edges(self) -> Iterable[tuple[str, str]]:
        for source, targets in self.imports.items():
            for target in targets:
                yield source, target

    def to_json(self) -> dict[str, Any]:
        return {
            "rev": self.rev,
            "files": self.files,
            "imports": {k: sorted(v) for k, v in self.imports.items() if v},
            "definitions": self.definitions,
            "users": {k: sorted(v) for k, v in self.users.items()},
            "cochange": [[a, b, round(w, 4)] for (a, b), w in sorted(self.cochange.items())],
            "changes": self.changes,
            "build_s": round(self.build_s, 3),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CodeGraph:
        graph = cls(data["rev"], files=data["files"], definitions=data["definitions"], changes=data["changes"])
        for k, v in data["imports"].items():
            graph.imports[k] = set(v)
        for k, v in data["users"].items():
            graph.users[k] = set(v)
        graph.cochange = {(a, b): w for a, b, w in data["cochange"]}
        graph.build_s = data.get("build_s", 0.0)
        return graph

    def dot(self) -> str:
        lines = ["digraph code {", "  rankdir=LR;", "  node [shape=box, fontsize=10];"]
        for path in sorted(self.files):
            style = ", style=dashed" if self.files[path].get("test") else ""
            lines.append(f'  "{path}" [label="{path}"{style}];')
        for source, target in sorted(self.edges()):
            lines.append(f'  "{source}" -> "{target}";')
        for (a, b), w in sorted(self.cochange.items()):
            if w >= 1.0:
                lines.append(f'  "{a}" -> "{b}" [dir=none, color=gray, penwidth={min(5.0, w):.1f}];')
        lines.append("}")
        return "\n".join(lines)


def strongly_connected(nodes: Iterable[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (deep import chains do not hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                out.append(component)
    return out


# Building


def _git(repo: Path, *args: str, stdin: bytes | None = None) -> bytes:
    result = subprocess.run(["git", f"--git-dir={git_dir(repo)}", *args], input=stdin, capture_output=True, check=False)
    if result.returncode != 0:
        raise ValueError(f"git {' '.join(args)} failed in {repo}: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def git_dir(repo: Path) -> Path:
    for candidate in (repo / ".git", repo):
        if (candidate / "HEAD").exists() and (candidate / "objects").is_dir():
            return candidate
    if (repo / ".git").is_file():  # a worktree: .git is a pointer file
        return repo / ".git"
    raise ValueError(f"{repo} is not a git repository")


def read_blobs(repo: Path, rev: str, paths: list[str]) -> dict[str, bytes]:
    if not paths:
        return {}
    request = "".join(f"{rev}:{p}\n" for p in paths).encode()
    data = _git(repo, "cat-file", "--batch", stdin=request)
    out: dict[str, bytes] = {}
    pos = 0
    for path in paths:
        end = data.index(b"\n", pos)
        header = data[pos:end].split()
        pos = end + 1
        if len(header) < 3 or header[1] == b"missing":
            continue
        size = int(header[2])
        out[path] = data[pos : pos + size]
        pos += size + 1
    return out


class _PythonModules:
    """Dotted module paths -> files, for exact resolution of Python imports."""

    def __init__(self, files: Iterable[str]) -> None:
        self.by_suffix: dict[str, list[str]] = defaultdict(list)
        for path in files:
            if not path.endswith(PY):
                continue
            stem = path.rsplit(".", 1)[0]
            if stem.endswith("/__init__"):
                stem = stem[: -len("/__init__")]
            elif stem == "__init__":
                continue
            parts = stem.split("/")
            for i in range(len(parts)):
                self.by_suffix[".".join(parts[i:])].append(path)

    def find(self, dotted: str, near: str) -> str | None:
        candidates = self.by_suffix.get(dotted)
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]

        # Several files end in this module path: prefer the one sharing the longest directory
        # prefix with the importer (the same source root), then the shortest path.
        def score(path: str) -> tuple[int, int]:
            common = posixpath.commonprefix([path, near]).count("/")
            return (-common, len(path))

        return min(candidates, key=score)


def _python_imports(
    path: str, source: bytes, modules: _PythonModules
) -> tuple[set[str], list[str], list[tuple[str, str]]]:
    """(imported files, top-level definitions, (file, name) imported by name)."""
    try:
        tree = ast.parse(source, filename=path)
    except (SyntaxError, ValueError):
        return set(), [], []
    package = posixpath.dirname(path)
    if not path.endswith(("/__init__.py", "/__init__.pyi")) and posixpath.basename(path).startswith("__init__"):
        package = posixpath.dirname(path)
    found: set[str] = set()
    named: list[tuple[str, str]] = []
    for node in _import_statements(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve_dotted(alias.name, modules, path)
                if target:
                    found.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_dir = package
                for _ in range(node.level - 1):
                    base_dir = posixpath.dirname(base_dir)
                module_dir = posixpath.join(base_dir, *(node.module or "").split(".")) if node.module else base_dir
                base = _relative_file(module_dir, modules) if node.module else None
                for alias in node.names:
                    sub = _relative_file(posixpath.join(module_dir, alias.name), modules)
                    if sub:
                        found.add(sub)
                    elif base:
                        found.add(base)
                        named.append((base, alias.name))
                    elif not node.module:
                        init = _relative_file(module_dir, modules)
                        if init:
                            found.add(init)
                            named.append((init, alias.name))
            elif node.module:
                base = _resolve_dotted(node.module, modules, path)
                for alias in node.names:
                    sub = modules.find(f"{node.module}.{alias.name}", path)
                    if sub:
                        found.add(sub)
                    elif base:
                        found.add(base)
                        named.append((base, alias.name))
    definitions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]
    found.discard(path)
    return found, definitions, named


def _import_statements(tree: ast.Module) -> Iterable[ast.stmt]:
    """Every statement, nested ones included, without walking expressions (imports are
    statements, and expressions are most of a tree)."""
    stack: list[ast.stmt] = list(reversed(tree.body))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            children = getattr(node, name, None)
            if isinstance(children, list):
                for child in reversed(children):
                    if isinstance(child, ast.stmt):
                        stack.append(child)
                    else:  # except handlers and match cases hold statements one level down
                        stack.extend(reversed([c for c in getattr(child, "body", []) if isinstance(c, ast.stmt)]))


def _resolve_dotted(dotted: str, modules: _PythonModules, near: str) -> str | None:
    parts = dotted.split(".")
    while parts:
        found = modules.find(".".join(parts), near)
        if found:
            return found
        parts.pop()
    return None


def _relative_file(module_dir: str, modules: _PythonModules) -> str | None:
    dotted = module_dir.strip("/").replace("/", ".")
    candidates = modules.by_suffix.get(dotted, [])
    for candidate in candidates:
        stem = candidate.rsplit(".", 1)[0]
        if stem == module_dir or stem == f"{module_dir}/__init__":
            return candidate
    return None


_TS_PARSERS: dict[str, Any] = {}


def _js_parser(lang: str) -> Any:
    parser = _TS_PARSERS.get(lang)
    if parser is None:
        from tree_sitter import Language, Parser

        if lang == "typescript":
            import tree_sitter_typescript as ts

            parser = Parser(Language(ts.language_tsx()))
        else:
            import tree_sitter_javascript as js

            parser = Parser(Language(js.language()))
        _TS_PARSERS[lang] = parser
    return parser


def _js_imports(path: str, source: bytes, files: set[str]) -> set[str]:
    tree = _js_parser(language(path)).parse(source)
    specs: list[str] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        kind = node.type
        if kind in ("import_statement", "export_statement"):
            for child in node.children:
                if child.type == "string":
                    specs.append(child.text.decode(errors="replace").strip("'\"`"))
        elif kind == "call_expression":
            function = node.child_by_field_name("function")
            if function is not None and function.text in (b"require", b"import"):
                arguments = node.child_by_field_name("arguments")
                if arguments is not None:
                    for child in arguments.children:
                        if child.type == "string":
                            specs.append(child.text.decode(errors="replace").strip("'\"`"))
        stack.extend(node.children)
    found: set[str] = set()
    base = posixpath.dirname(path)
    for spec in specs:
        if not spec.startswith("."):
            continue  # a package, not a file of this repository
        target = posixpath.normpath(posixpath.join(base, spec))
        for candidate in (target, *(target + e for e in JS), *(f"{target}/index{e}" for e in JS)):
            if candidate in files:
                found.add(candidate)
                break
    return found


def cochange(
    repo: Path, rev: str, files: set[str], history: int
) -> tuple[dict[tuple[str, str], float], dict[str, int]]:
    log = _git(repo, "log", "--no-merges", "--no-renames", f"-n{history}", "--format=%x00", "--name-only", rev)
    pairs: dict[tuple[str, str], float] = defaultdict(float)
    changes: dict[str, int] = defaultdict(int)
    for chunk in log.decode(errors="replace").split("\0"):
        touched = sorted({line for line in chunk.splitlines() if line in files})
        for path in touched:
            changes[path] += 1
        if len(touched) < 2 or len(touched) > MAX_COMMIT_FILES:
            continue
        weight = 1.0 / (len(touched) - 1)
        for i, a in enumerate(touched):
            for b in touched[i + 1 :]:
                pairs[(a, b)] += weight
    return dict(pairs), dict(changes)


def build_graph(repo: Path, rev: str = "HEAD", history: int = 2000) -> CodeGraph:
    started = time.perf_counter()
    sha = _git(repo, "rev-parse", "--verify", f"{rev}^{{commit}}").decode().strip()
    listing = _git(repo, "ls-tree", "-r", "-l", "-z", sha).decode(errors="replace")
    files: dict[str, dict[str, Any]] = {}
    for entry in listing.split("\0"):
        if not entry:
            continue
        meta, path = entry.split("\t", 1)
        kind, size = meta.split()[1], meta.split()[3]
        if kind != "blob":
            continue
        files[path] = {"lang": language(path), "size": int(size) if size.isdigit() else 0, "test": is_test(path)}
    graph = CodeGraph(sha, files=files)
    text = [p for p, info in files.items() if p.endswith((*CODE, *DOCS)) and info["size"] <= MAX_BLOB]
    blobs = read_blobs(repo, sha, text)
    for path, blob in blobs.items():
        files[path]["lines"] = blob.count(b"\n") + (0 if blob.endswith(b"\n") or not blob else 1)
    blobs = {p: b for p, b in blobs.items() if p.endswith((*PY, *JS))}
    modules = _PythonModules(files)
    names = set(files)
    for path, source in blobs.items():
        if path.endswith(PY):
            found, definitions, named = _python_imports(path, source, modules)
            if definitions:
                graph.definitions[path] = definitions
            for module, name in named:
                if name in graph.definitions.get(module, ()) or not module.endswith(PY):
                    pass
                graph.users[f"{module}::{name}"].add(path)
        else:
            found = _js_imports(path, source, names)
        if found:
            graph.imports[path] = found
    # keep only users of names that are real definitions
    graph.users = defaultdict(
        set, {k: v for k, v in graph.users.items() if k.split("::")[1] in graph.definitions.get(k.split("::")[0], ())}
    )
    graph.cochange, graph.changes = cochange(repo, sha, names, history)
    graph.build_s = time.perf_counter() - started
    return graph


def load_graph(repo: Path, rev: str = "HEAD", history: int = 2000, cache: bool = True) -> CodeGraph:
    """The graph at `rev`, from the cache under the git directory when it is there."""
    sha = _git(repo, "rev-parse", "--verify", f"{rev}^{{commit}}").decode().strip()
    folder = git_dir(repo)
    if folder.is_file():
        folder = Path(_git(repo, "rev-parse", "--git-common-dir").decode().strip())
    path = folder / "parallax" / "graphs" / f"{sha}-{history}.json"
    if cache and path.exists():
        return CodeGraph.from_json(json.loads(path.read_text()))
    graph = build_graph(repo, sha, history)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(graph.to_json()))
    return graph
