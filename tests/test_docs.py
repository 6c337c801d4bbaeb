"""The README and docs/*.md name only things that exist, and their links resolve.

What counts as a repository path (checked against the checkout):

- any token, in prose, inline code or a fenced code block, that starts with one of the
  top-level folders in ``TOP_LEVEL_FOLDERS`` followed by ``/`` (``server/gateway/``,
  ``actors/shard/journal.py``, ``bench/RESULTS.md``, ``.ci/run``), or that is one of the
  top-level files in ``TOP_LEVEL_FILES`` (``pyproject.toml``); such a token is always
  relative to the repository root, whichever file names it. A token that is glued to a
  preceding ``/``, ``.`` or word character (``./data``, ``../server/x.py``, a URL, a
  dotted module name) is not one. Trailing punctuation (``.``, ``,``, ``:``, ``;``) is
  not part of it. A ``*`` in it is a glob that must match something. Link targets are
  not scanned for such tokens: they are links, checked relative to their file (below).
- Everything else is not checked as a path: ``./data``, ``/proc/<pid>/status``,
  ``~/.config``, ``redis-server``, and the user's own files the examples mention
  (``rules.toml``, ``loyalty.toml``, ``server.pem``).
- Paths under a folder that .gitignore ignores (``bench/out/``: benchmark output) are
  written by the programs and are not expected in the checkout.

Links: every markdown link ``[text](target)`` outside code whose target is not a URL
(no ``scheme:``) must resolve relative to the file that holds it, and a ``#anchor``
(alone or after a markdown file) must be the GitHub-style slug of a heading of that
file: lower case, punctuation other than ``-`` and ``_`` dropped, spaces to ``-``,
``-1``, ``-2`` ... for repeats. Headings inside fenced code blocks are not headings.

Modules: every ``python -m loyalty.<module>`` command the docs show must name a module
of the package, found through pyproject.toml's package-dir mapping (nothing is imported).

Names: inline code outside fenced blocks that is a dotted ``loyalty.`` name
(``loyalty.clients.errors``, ``loyalty.clients.testing.FakeLoyaltyServer``,
``loyalty.v1.LoyaltyService/Earn``) must name a module of the package; a name after the
longest module must appear in that module's source (or be a message, an enum or a gRPC
service of a .proto beside it, and a ``/Method`` one of the service's rpcs). Deeper attributes are not checked.
Names ending in a file suffix (``loyalty.toml``) are files, not names.

The checks run on one function each so that a test can run them on a copy with a bad
path and see them fail (``test_the_checks_can_fail``). The README's SDK example runs
against the in-process fake and prints what its comments say.
"""

from __future__ import annotations

import pathlib
import re
import textwrap
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOP_LEVEL_FOLDERS = (
    "server", "actors", "clients", "proto", "bench", "tests", "examples", "docs", "deploy", ".ci",
)
TOP_LEVEL_FILES = ("pyproject.toml", "README.md", ".gitignore")

PATH_TOKEN = re.compile(
    r"(?<![\w./~-])(?:(?:" + "|".join(re.escape(f) for f in TOP_LEVEL_FOLDERS) + r")/[\w./*-]*"
    r"|(?:" + "|".join(re.escape(f) for f in TOP_LEVEL_FILES) + r")(?![\w.-]))"
)
LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
LINK_TARGET = re.compile(r"\]\([^()\s]+(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"`[^`\n]*`")
DOTTED_NAME = re.compile(r"^(?:python -m )?(loyalty(?:\.\w+)+)(?:/(\w+|\*))?(?:\(.*\))?(?: .*)?$")
FILE_SUFFIXES = ("toml", "proto", "py", "md", "yaml", "yml", "json", "pem", "key")
PYTHON_M = re.compile(r"python -m (loyalty(?:\.\w+)+)")


def doc_files(root: pathlib.Path = ROOT) -> list[pathlib.Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def split_fences(text: str) -> tuple[str, str]:
    """(text outside fenced code blocks, text inside them); each keeps its line count."""
    outside, inside, fenced = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            outside.append("")
            inside.append("")
            continue
        (inside if fenced else outside).append(line)
        (outside if fenced else inside).append("")
    return "\n".join(outside), "\n".join(inside)


def ignored_prefixes(root: pathlib.Path) -> list[str]:
    """Folders .gitignore ignores by path (``bench/out/``, ``/data/``), as prefixes."""
    gitignore = root / ".gitignore"
    prefixes = []
    for line in gitignore.read_text().splitlines() if gitignore.exists() else []:
        line = line.strip()
        if line.endswith("/") and "/" in line[:-1] and "*" not in line:
            prefixes.append(line.lstrip("/"))
    return prefixes


def named_paths(text: str) -> list[str]:
    return [token.rstrip(".,:;") for token in PATH_TOKEN.findall(text)]


def missing_paths(files: list[pathlib.Path], root: pathlib.Path = ROOT) -> list[str]:
    ignored = ignored_prefixes(root)
    problems = []
    for file in files:
        for number, line in enumerate(file.read_text().splitlines(), 1):
            for path in named_paths(LINK_TARGET.sub("]()", line)):  # links: broken_links
                if any(path.startswith(prefix) for prefix in ignored):
                    continue
                exists = any(root.glob(path.rstrip("/"))) if "*" in path else (root / path).exists()
                if not exists:
                    problems.append(f"{file.relative_to(root)}:{number}: {path} does not exist")
    return problems


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(file: pathlib.Path) -> set[str]:
    outside, _ = split_fences(file.read_text())
    seen: dict[str, int] = {}
    result = set()
    for line in outside.splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def broken_links(files: list[pathlib.Path], root: pathlib.Path = ROOT) -> list[str]:
    problems = []
    for file in files:
        outside, _ = split_fences(file.read_text())
        for number, line in enumerate(outside.splitlines(), 1):
            for target in LINK.findall(INLINE_CODE.sub("``", line)):
                if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
                    continue  # a URL
                where = f"{file.relative_to(root)}:{number}: {target}"
                path_part, _, anchor = target.partition("#")
                linked = (file.parent / path_part).resolve() if path_part else file
                if not linked.exists():
                    problems.append(f"{where}: {path_part} does not exist")
                    continue
                if root not in linked.parents and linked != root:
                    problems.append(f"{where}: points outside the repository")
                    continue
                if anchor:
                    if linked.suffix != ".md":
                        problems.append(f"{where}: an anchor into a file that is not markdown")
                    elif anchor not in anchors(linked):
                        problems.append(f"{where}: no heading with anchor #{anchor} in {linked.name}")
    return problems


def module_file(module: str, root: pathlib.Path = ROOT) -> pathlib.Path | None:
    """The file of a dotted module name of the package, or None."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    package_dirs = pyproject["tool"]["setuptools"]["package-dir"]
    for package in sorted(package_dirs, key=len, reverse=True):
        if module != package and not module.startswith(package + "."):
            continue
        base = root / package_dirs[package]
        rest = module[len(package) + 1:].split(".") if module != package else []
        if rest:
            base = base.joinpath(*rest)
            candidates = [base.with_name(base.name + ".py"), base / "__init__.py"]
        else:
            candidates = [base / "__init__.py"]
        return next((candidate for candidate in candidates if candidate.is_file()), None)
    return None


def unknown_modules(files: list[pathlib.Path], root: pathlib.Path = ROOT) -> list[str]:
    problems = []
    for file in files:
        for number, line in enumerate(file.read_text().splitlines(), 1):
            for module in PYTHON_M.findall(line):
                if module_file(module, root) is None:
                    problems.append(f"{file.relative_to(root)}:{number}: no module {module}")
    return problems


def unknown_names(files: list[pathlib.Path], root: pathlib.Path = ROOT) -> list[str]:
    problems = []
    for file in files:
        outside, _ = split_fences(file.read_text())
        for number, line in enumerate(outside.splitlines(), 1):
            for code in re.findall(r"`([^`\n]+)`", line):
                match = DOTTED_NAME.match(code)
                if not match or match.group(1).rsplit(".", 1)[1] in FILE_SUFFIXES:
                    continue
                problem = name_problem(match.group(1), match.group(2), root)
                if problem:
                    problems.append(f"{file.relative_to(root)}:{number}: {code}: {problem}")
    return problems


def name_problem(dotted: str, method: str | None, root: pathlib.Path) -> str | None:
    parts = dotted.split(".")
    for length in range(len(parts), 0, -1):
        module = module_file(".".join(parts[:length]), root)
        if module is not None:
            break
    else:
        return "no such module"
    rest = parts[length:]
    if not rest:
        return None if method is None else f"{method} is not a method of a module"
    name = rest[0]
    for proto in sorted(module.parent.glob("*.proto")):
        text = proto.read_text()
        service = re.search(rf"^service {name}\s*\{{(.*?)^\}}", text, flags=re.M | re.S)
        if service:
            if method in (None, "*") or re.search(rf"\brpc {method}\s*\(", service.group(1)):
                return None
            return f"service {name} has no rpc {method}"
        if method is None and re.search(rf"^(message|enum) {re.escape(name)}\s*\{{", text, flags=re.M):
            return None
    if method is None and re.search(rf"\b{re.escape(name)}\b", module.read_text()):
        return None
    return f"{name} is not in {module.relative_to(root)}"


def test_there_are_docs_to_check():
    files = doc_files()
    assert len(files) > 5
    assert all(file.exists() for file in files)
    assert sum(len(named_paths(file.read_text())) for file in files) > 50


def test_every_path_the_docs_name_exists():
    assert missing_paths(doc_files()) == []


def test_every_relative_link_resolves():
    assert broken_links(doc_files()) == []


def test_every_module_the_docs_run_exists():
    assert unknown_modules(doc_files()) == []


def test_every_package_name_the_docs_use_exists():
    assert unknown_names(doc_files()) == []


def test_the_readme_links_every_docs_file():
    readme = (ROOT / "README.md").read_text()
    linked = {pathlib.PurePosixPath(target.partition("#")[0]) for target in LINK.findall(readme)}
    for file in sorted((ROOT / "docs").glob("*.md")):
        assert pathlib.PurePosixPath("docs", file.name) in linked, f"README.md does not link docs/{file.name}"


def test_the_readme_keeps_the_commands_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = "pip install -e '.[test]' && python -m pytest"
    assert test_command in ci
    readme = (ROOT / "README.md").read_text()
    assert test_command in readme
    assert "pip install . && loyalty serve" in readme


def test_the_checks_can_fail(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "server").mkdir()
    (tmp_path / "server" / "real.py").write_text("class Thing:\n    pass\n")
    (tmp_path / ".gitignore").write_text("bench/out/\n")
    (tmp_path / "pyproject.toml").write_text('[tool.setuptools.package-dir]\n"loyalty.server" = "server"\n')
    (tmp_path / "README.md").write_text(textwrap.dedent("""\
        # Title

        ## Known section

        `server/real.py` and `server/gone.py`, bare server/also_gone.py: and
        [a doc](docs/other.md#known-section), [missing](docs/nowhere.md),
        [bad anchor](docs/other.md#no-such-heading), [here](#known-section),
        [web](https://example.com/server/x.py), ./data, `rules.toml`, bench/out/x.csv.
        `loyalty.server.real.Thing`, `loyalty.server.real.Gone`, `loyalty.server.gone`, `loyalty.toml`.

        ```bash
        python server/missing_script.py   # run me, `loyalty.server.gone` in a block is not checked
        python -m loyalty.server.real
        python -m loyalty.server.unreal
        ```
        """))
    (tmp_path / "docs" / "other.md").write_text("# Known section\n\n[up](../server/real.py), [up](../server/nope.py)\n")
    files = doc_files(tmp_path)
    assert missing_paths(files, tmp_path) == [
        "README.md:5: server/gone.py does not exist",
        "README.md:5: server/also_gone.py does not exist",
        "README.md:12: server/missing_script.py does not exist",
    ]
    assert broken_links(files, tmp_path) == [
        "README.md:6: docs/nowhere.md: docs/nowhere.md does not exist",
        "README.md:7: docs/other.md#no-such-heading: no heading with anchor #no-such-heading in other.md",
        "docs/other.md:3: ../server/nope.py: ../server/nope.py does not exist",
    ]
    assert unknown_modules(files, tmp_path) == ["README.md:14: no module loyalty.server.unreal"]
    assert unknown_names(files, tmp_path) == [
        "README.md:9: loyalty.server.real.Gone: Gone is not in server/real.py",
        "README.md:9: loyalty.server.gone: no such module",
    ]


@pytest.mark.parametrize(
    "heading, anchor",
    [
        ("Security: API keys, roles, TLS and limits", "security-api-keys-roles-tls-and-limits"),
        ("API: `loyalty.v1.LoyaltyService`", "api-loyaltyv1loyaltyservice"),
        ("Health, for load balancers and Kubernetes probes", "health-for-load-balancers-and-kubernetes-probes"),
        ("rules_source and --hot-members", "rules_source-and---hot-members"),
    ],
)
def test_slugs_are_githubs(heading, anchor):
    assert slug(heading) == anchor


def readme_sdk_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A short SDK example", 1)[1]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]


def test_the_readme_sdk_example_prints_what_its_comments_say(capsys):
    from loyalty.clients.testing import FakeLoyaltyServer

    code = readme_sdk_example()
    assert '"127.0.0.1:50051"' in code
    expected = re.findall(r"^\s*print\(.*\)\s+#\s*(.+)$", code, flags=re.M)
    assert expected
    with FakeLoyaltyServer() as fake:
        exec(compile(code.replace('"127.0.0.1:50051"', repr(fake.target)), "README.md", "exec"), {"__name__": "example"})
    assert capsys.readouterr().out.splitlines() == expected
