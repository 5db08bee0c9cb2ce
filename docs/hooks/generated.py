"""MkDocs hook: the pages that are generated, so that they cannot drift from their sources.

- `<!-- settings-table -->` becomes the table of every `executor.settings.Settings` field: its
  environment variable, its default and its description (the field's `description`, else the `#:`
  comment above it in the class). A setting without a description is a warning, which fails the
  strict build (`make test`): a new setting is documented or the build says which one is not.
- `<!-- readme: Heading -->` becomes that section of README.md (down to the next heading of its
  level), its headings shifted under the page's title. The guides operators read live in the README,
  where they are edited beside the code; the site shows them as they are. Links to repository files
  (not pages of the site) are kept as their text. A `##` section of the README that no page
  includes (and that is not in `README_ONLY`) is a warning: a new guide reaches the site too.
"""

from __future__ import annotations

import inspect
import logging
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic_core import PydanticUndefined

log = logging.getLogger("mkdocs.plugins.executor")

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_MARK = "<!-- settings-table -->"
README_MARK = re.compile(r"^<!-- readme: (?P<heading>.+?) -->$", re.MULTILINE)
HEADING = re.compile(r"^(?P<hashes>#{1,6}) (?P<title>.+)$")
LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]+)\]\((?P<target>[^)\s]+)\)")
#: Defaults computed when the process starts: shown as what they come to, not as this machine's value.
#: README sections that stay in the README only: the tour's own parts and what the site has elsewhere.
README_ONLY = {"Documentation", "Writing a plugin", "Remote-service plugins", "Layout", "Tests"}
_included: set[str] = set()
COMPUTED_DEFAULTS = {"process_workers": "the number of CPUs", "replica_id": "`host:pid`"}


def on_pre_build(config: Any) -> None:
    _included.clear()


def on_post_build(config: Any) -> None:
    headings = [
        match["title"].strip()
        for match in map(HEADING.match, _outside_fences((ROOT / "README.md").read_text(encoding="utf-8")))
        if match and len(match["hashes"]) == 2
    ]
    for heading in headings:
        if heading not in _included and heading not in README_ONLY:
            log.warning(
                "README.md's section %r is on no page of the site (docs/guides: <!-- readme: ... -->)",
                heading,
            )


def _outside_fences(text: str) -> list[str]:
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if SETTINGS_MARK in markdown:
        markdown = markdown.replace(SETTINGS_MARK, settings_table())
    return README_MARK.sub(lambda match: readme_section(match["heading"], page.file.src_uri), markdown)


# -- the settings table -------------------------------------------------------------------------


def settings_table() -> str:
    from executor.settings import Settings

    comments = _attribute_comments(Settings)
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        description = field.description or comments.get(name)
        if not description:
            log.warning(
                "settings: EXECUTOR_%s has no description (a `#:` comment above the field)", name.upper()
            )
            description = ""
        rows.append(f"| `EXECUTOR_{name.upper()}` | {_default(name, field)} | {_cell(description)} |")
    return "\n".join(rows)


def _attribute_comments(cls: type) -> dict[str, str]:
    """The `#:` comment lines right above each `name: type` line of a class body."""
    found: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        field = re.match(r"(\w+)\s*:", stripped)
        if field and pending:
            found[field[1]] = " ".join(pending)
        pending = []
    return found


def _default(name: str, field: Any) -> str:
    if name in COMPUTED_DEFAULTS:
        return COMPUTED_DEFAULTS[name]
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, timedelta):
        return f"`{_duration(value)}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    return f"`{value}`"


def _duration(value: timedelta) -> str:
    """As the settings take it: 5ms, 30s, 5m, 2h."""
    milliseconds = round(value.total_seconds() * 1000)
    if milliseconds % 1000:
        return f"{milliseconds}ms"
    seconds = milliseconds // 1000
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


# -- sections of the README ---------------------------------------------------------------------


def readme_section(heading: str, page_uri: str) -> str:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start, level = _find(lines, heading)
    if start is None:
        log.warning("%s: README.md has no section %r", page_uri, heading)
        return ""
    _included.add(heading)
    section: list[str] = []
    fenced = False
    for line in lines[start:]:
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else HEADING.match(line)
        if match and section and len(match["hashes"]) <= level:
            break
        if match:  # the section's own heading becomes a level-2 heading under the page's title
            section.append("#" * (len(match["hashes"]) - level + 2) + " " + match["title"])
        else:
            section.append(line if fenced else LINK.sub(_unlink, line))
    return "\n".join(section)


def _find(lines: list[str], heading: str) -> tuple[int | None, int]:
    fenced = False
    for index, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else HEADING.match(line)
        if match and match["title"].strip() == heading:
            return index, len(match["hashes"])
    return None, 0


def _unlink(match: re.Match[str]) -> str:
    target = match["target"]
    if target.startswith(("http://", "https://", "mailto:")):
        return match[0]
    return match["text"]  # a file of the repository, or an anchor of the README: not a page here
