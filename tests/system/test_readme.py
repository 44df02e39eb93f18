"""README.md and docs/*.md state facts that live in the code; they must not drift from it.

Quoted defaults: a default of a `MNIST_*` setting is recognised in three forms, and each must be the one
`Settings.reference()` gives.
- A table row whose first cell is the variable, `| `MNIST_X` | value | ... |`: the second cell is its default.
  Such a row naming a variable that is no setting fails too (tables of variables are the service's settings).
- An assignment followed by "(default)": "`MNIST_X=value` (default)".
- The variable followed by "(default V" or "(default: V", e.g. "`MNIST_X` (default 10 s)"; V runs up to the
  first ")", "," or ";".
A quoted value is the default when it is the same text, or when its first word is the same number ("10 s"
and "10.0" both quote 10). Every other assignment is an example, not a default (`MNIST_PROVIDERS=cuda
mnist-serve`, `MNIST_MAX_QUEUE=8192`), and the two inline forms ignore `MNIST_*` variables that are no setting
(`MNIST_DATA_DIR`, `MNIST_URL`, ...): their defaults live in the programs that read them.

The shipped model's version: quoted as "shipped model X.Y.Z" (also "shipped model (X.Y.Z)") or "model card of
X.Y.Z", words separated by any whitespace, so a phrase wrapped over two lines counts. It must be
models/lenet5.json's "version". An older model is named otherwise ("the model shipped then, 1.0.0", "the
previous model (1.0.0)").

The layout block is the README's fenced block with a line starting "service/"; a line starting at column 0
opens the section of the folder it names, indented lines continue it. Every `*.py` directly in service/ and
trainer/ (but __init__ and __main__) is named in its folder's section as `name.py`, every sub-package as
`name/`, and every `name.py` a section names exists in that folder.

Paths: every repository path quoted as code (`service/...`, `tests/...`: a top-level folder, a slash, then
path characters) names a file or folder that exists, so a moved module or test is not left quoted at its old
place.

Links: every relative link `[text](target)` or `![alt](target)` outside code resolves from the document's
folder, and its `#fragment`, if any, is a heading of the target (GitHub's anchors).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from service.cli import settings_table
from service.settings import ROOT, Settings

README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
LAYOUT_PACKAGES = ("service", "trainer")
MAX_README_LINES = 250

FENCE = re.compile(r"^```.*?^```[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
TABLE_ROW = re.compile(r"^\|\s*`?(MNIST_[A-Z0-9_]+)`?\s*\|([^|]*)\|", re.MULTILINE)
ASSIGNED_DEFAULT = re.compile(r"`(MNIST_[A-Z0-9_]+)=([^`\s]*)`\s+\(default\)")
STATED_DEFAULT = re.compile(r"`?(MNIST_[A-Z0-9_]+)`?\s+\(default:?\s+([^),;]+)")
SHIPPED_VERSION = re.compile(r"shipped\s+model\s+\(?v?(\d+\.\d+\.\d+)|model\s+card\s+of\s+v?(\d+\.\d+\.\d+)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _defaults() -> dict[str, str]:
    return {variable: default for variable, default, _ in Settings.reference()}


def _is_default(quoted: str, default: str) -> bool:
    """Same text, or the same number in the first word (a unit may follow)."""
    quoted = quoted.strip().strip("`").strip()
    if quoted == default:
        return True
    try:
        return float(quoted.split()[0].strip("`")) == float(default)
    except (ValueError, IndexError):
        return False


def quoted_defaults(text: str) -> list[tuple[str, str, bool]]:
    """(variable, quoted value, from a table row) for every default the text quotes."""
    found = [(name, value, True) for name, value in TABLE_ROW.findall(text)]
    found += [(name, value, False) for name, value in ASSIGNED_DEFAULT.findall(text)]
    found += [(name, value, False) for name, value in STATED_DEFAULT.findall(text)]
    return found


def wrong_defaults(text: str, defaults: dict[str, str]) -> list[str]:
    wrong = []
    for name, value, in_table in quoted_defaults(text):
        if name not in defaults:
            if in_table:
                wrong.append(f"{name} is no setting")
        elif not _is_default(value, defaults[name]):
            wrong.append(f"{name}: quoted {value.strip().strip('`')!r}, Settings has {defaults[name]!r}")
    return wrong


def layout_sections(readme: str) -> dict[str, str]:
    """Folder ("service") -> the text of its section in the layout block."""
    blocks = [block for block in FENCE.findall(readme) if re.search(r"^service/", block, re.MULTILINE)]
    assert len(blocks) == 1, "the README has one layout block (a fenced block with a line starting service/)"
    sections: dict[str, str] = {}
    folder = ""
    for line in blocks[0].splitlines()[1:-1]:
        if line and not line[0].isspace():
            folder = line.split("/")[0]
            sections[folder] = ""
        sections[folder] = sections.get(folder, "") + line + "\n"
    return sections


def top_level_modules(package: Path) -> list[str]:
    """`name.py` of each module in the package (but __init__, __main__); `name/` of each sub-package."""
    modules = [path.name for path in package.glob("*.py") if path.stem not in {"__init__", "__main__"}]
    packages = [f"{path.parent.name}/" for path in package.glob("*/__init__.py")]
    return sorted(modules + packages)


def missing_from_layout(readme: str, root: Path) -> list[str]:
    sections = layout_sections(readme)
    missing = []
    for package in LAYOUT_PACKAGES:
        section = sections.get(package, "")
        for module in top_level_modules(root / package):
            if not re.search(rf"(?<![\w/]){re.escape(module)}(?!\w)", section):
                missing.append(f"{package}/{module}")
    return missing


def gone_from_tree(readme: str, root: Path) -> list[str]:
    sections = layout_sections(readme)
    return [
        f"{package}/{name}"
        for package in LAYOUT_PACKAGES
        for name in re.findall(r"(?<![\w/])(\w+\.py)\b", sections.get(package, ""))
        if not (root / package / name).is_file()
    ]


def wrong_shipped_versions(text: str, shipped: str) -> list[str]:
    quoted = [a or b for a, b in SHIPPED_VERSION.findall(text)]
    return [version for version in quoted if version != shipped]


def _prose(text: str) -> str:
    """The text without fenced blocks and inline code, where brackets are code, not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    for heading in HEADING.findall(FENCE.sub("", markdown)):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        if seen[slug]:
            seen[f"{slug}-{seen[slug]}"] = 0
    return set(seen)


def broken_links(document: Path) -> list[str]:
    broken = []
    for target in LINK.findall(_prose(_text(document))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # http:, https:, mailto: ... are not files of the repository
        path, _, fragment = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(_text(resolved)):
            broken.append(f"{target}: no heading #{fragment} in {resolved.name}")
    return broken


def test_every_quoted_default_is_the_settings_default() -> None:
    defaults = _defaults()
    wrong = {_name(doc): found for doc in DOCUMENTS if (found := wrong_defaults(_text(doc), defaults))}
    assert wrong == {}


def test_the_defaults_are_recognised_where_the_documents_quote_them() -> None:
    """The rule sees the tables and the inline forms, so a wrong default cannot hide from it."""
    quoted = {name for doc in DOCUMENTS for name, _, _ in quoted_defaults(_text(doc))}
    assert quoted >= {"MNIST_KEEPALIVE_TIMEOUT_S", "MNIST_PROVIDERS", "MNIST_IMAGE_THREADS"}
    assert set(_defaults()) <= quoted, "docs/configuration.md quotes every setting"


def test_examples_are_not_read_as_defaults() -> None:
    text = "`MNIST_PROVIDERS=cuda mnist-serve`, `MNIST_MAX_QUEUE=8192`, `MNIST_IMAGE_THREADS=1` (one thread)"
    assert quoted_defaults(text) == []


def test_configuration_table_is_the_settings() -> None:
    """Regenerate with `mnist-serve --settings-table` after changing service/settings.py."""
    assert settings_table() in _text(ROOT / "docs" / "configuration.md")


def test_the_layout_block_names_every_module_of_service_and_trainer() -> None:
    assert missing_from_layout(_text(README), ROOT) == []


def test_the_layout_block_names_no_module_that_is_gone() -> None:
    assert gone_from_tree(_text(README), ROOT) == []


def test_the_shipped_model_is_quoted_with_its_card_version() -> None:
    shipped = json.loads(_text(ROOT / "models" / "lenet5.json"))["version"]
    assert any(SHIPPED_VERSION.search(_text(doc)) for doc in DOCUMENTS), "the docs name the shipped model"
    wrong = {_name(doc): found for doc in DOCUMENTS if (found := wrong_shipped_versions(_text(doc), shipped))}
    assert wrong == {}


def test_every_relative_link_resolves() -> None:
    assert LINK.findall(_prose(_text(README))), "the README links its docs/"
    broken = {_name(doc): found for doc in DOCUMENTS if (found := broken_links(doc))}
    assert broken == {}


QUOTED_PATH = re.compile(r"`((?:service|trainer|tests|bench|client|docker|models|docs)/[\w./-]*)`")


def missing_paths(text: str, root: Path) -> list[str]:
    return [path for path in QUOTED_PATH.findall(text) if not (root / path).exists()]


def test_every_quoted_repository_path_exists() -> None:
    missing = {_name(doc): found for doc in DOCUMENTS if (found := missing_paths(_text(doc), ROOT))}
    assert missing == {}


def test_the_readme_is_a_guide_of_at_most_250_lines() -> None:
    """Reports and measurements belong in docs/, one topic per file."""
    assert len(_text(README).splitlines()) <= MAX_README_LINES
