"""The README and the pages in docs/: links that resolve, curl examples that name real routes.

No server is started. Links are checked against the files and headings of this checkout;
``curl`` examples (in shell code blocks and in inline code) against the routes of the service's
OpenAPI document, ``bandit.api.openapi.document()["paths"]``:

- every relative link names a file or directory that exists, inside the repository, and a
  ``#anchor`` names a heading of the target page (GitHub's rules: lower case, spaces to ``-``,
  punctuation dropped, ``-1``, ``-2`` ... for repeated headings);
- every ``curl`` names a route: the method (``-X``, else POST when a body is sent, else GET)
  and the path after the host, without the query string, match a path of the document, where
  a literal segment matches a ``{parameter}`` and a shell variable (``$EXPERIMENT``) matches
  only a ``{parameter}``;
- every ``curl`` that sends a body says ``Content-Type: application/json`` (the service answers
  415 otherwise), and none sends a decision id copied from someone else's run;
- the API page has an example for every route (the dashboard's files aside), and the README
  keeps the ``<!-- test-command -->`` marker CI reads the test command after.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

from bandit.api.openapi import document
from bandit.tokens import DECISION_ID_PATTERN

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
API_PAGE = ROOT / "docs" / "api.md"

#: Code blocks whose ``curl`` lines are checked (other languages hold no shell commands).
SHELL_LANGUAGES = frozenset({"", "sh", "bash", "shell", "console", "zsh"})
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
#: Routes the API page need not show: the dashboard's files are for browsers.
NOT_FOR_CURL = frozenset({("GET", "/"), ("GET", "/dashboard/{name}")})

#: curl options followed by a value (long and short spellings), and those that send a body.
VALUE_OPTIONS = frozenset({
    "-X", "--request", "-H", "--header", "-d", "--data", "--data-raw", "--data-binary",
    "--data-urlencode", "--json", "-o", "--output", "-w", "--write-out", "-u", "--user",
    "-m", "--max-time", "--connect-timeout", "-A", "--user-agent", "--url", "--retry",
    "-F", "--form", "-e", "--referer", "-b", "--cookie", "-x", "--proxy", "--cacert",
})
BODY_OPTIONS = frozenset({"-d", "--data", "--data-raw", "--data-binary", "--data-urlencode",
                          "--json", "-F", "--form"})
FLAG_OPTIONS = frozenset({
    "-s", "--silent", "-S", "--show-error", "-f", "--fail", "-i", "--include", "-v",
    "--verbose", "-L", "--location", "-k", "--insecure", "-N", "--no-buffer", "-G", "--get",
    "-I", "--head", "--compressed", "--fail-with-body",
})
SHORT_VALUE_LETTERS = frozenset(option[1] for option in VALUE_OPTIONS if len(option) == 2)
SHORT_FLAG_LETTERS = frozenset(option[1] for option in FLAG_OPTIONS if len(option) == 2)

FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})\s*([\w+-]*)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$",
                            re.MULTILINE)
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
PUNCTUATION = frozenset("();<>|&")


@dataclass(frozen=True)
class Page:
    path: Path
    #: The text outside code blocks, code blocks blanked (line numbers are kept).
    prose: str
    #: (language, first line number, text) of every fenced code block.
    blocks: tuple[tuple[str, int, str], ...]

    @property
    def name(self) -> str:
        return str(self.path.relative_to(ROOT))


@dataclass(frozen=True)
class Curl:
    where: str
    command: str
    method: str
    url: str
    path: str
    body: bool
    json_content_type: bool


def read_page(path: Path) -> Page:
    prose: list[str] = []
    blocks: list[tuple[str, int, str]] = []
    fence: str | None = None
    language, start = "", 0
    code: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = FENCE.match(line)
        if fence is None and match:
            fence, language, start, code = match.group(1), match.group(2).lower(), number, []
            prose.append("")
        elif fence is not None and line.strip().startswith(fence[0] * len(fence)) \
                and not line.strip().strip(fence[0]):
            blocks.append((language, start, "\n".join(code)))
            fence = None
            prose.append("")
        elif fence is not None:
            code.append(line)
            prose.append("")
        else:
            prose.append(line)
    assert fence is None, f"{path.name}: the code block opened on line {start} is never closed"
    return Page(path, "\n".join(prose), tuple(blocks))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Page) -> set[str]:
    found: set[str] = set(HTML_ANCHOR.findall(page.prose))
    seen: dict[str, int] = {}
    for line in page.prose.splitlines():
        match = HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Page) -> Iterator[tuple[int, str]]:
    """(line number, target) of every link outside code, inline code blanked first."""
    text = CODE_SPAN.sub(lambda match: re.sub(r"[^\n]", " ", match.group(0)), page.prose)
    for pattern in (INLINE_LINK, REFERENCE_LINK):
        for match in pattern.finditer(text):
            yield text.count("\n", 0, match.start()) + 1, match.group(1)


def link_problem(page: Page, target: str) -> str | None:
    if SCHEME.match(target) or target.startswith("//"):
        return None  # a web address: not checked here, no network in tests
    path_part, _, anchor = target.partition("#")
    destination = (page.path.parent / unquote(path_part)).resolve() if path_part else page.path
    if not destination.is_relative_to(ROOT):
        return f"{target}: points outside the repository"
    if not destination.exists():
        return f"{target}: {destination.relative_to(ROOT)} does not exist"
    if anchor:
        if destination.suffix != ".md" or destination.is_dir():
            return f"{target}: an anchor into something that is not a Markdown page"
        if unquote(anchor) not in anchors(read_page(destination)):
            return f"{target}: no heading #{anchor} in {destination.relative_to(ROOT)}"
    return None


def logical_lines(script: str) -> list[str]:
    """The commands of a shell snippet, one per line: continuations joined, comments dropped.

    A newline inside quotes belongs to the command (a JSON body over several lines)."""
    lines: list[str] = []
    current: list[str] = []
    quote = ""
    index = 0
    while index < len(script):
        char = script[index]
        following = script[index + 1] if index + 1 < len(script) else ""
        if quote:
            current.append(char)
            if char == quote:
                quote = ""
            elif char == "\\" and quote == '"' and following:
                current.append(following)
                index += 1
        elif char == "\\" and following:
            current.append(" " if following == "\n" else char + following)
            index += 1
        elif char in "'\"":
            quote = char
            current.append(char)
        elif char == "#" and (not current or current[-1].isspace()):
            while index < len(script) and script[index] != "\n":
                index += 1
            continue
        elif char == "\n":
            lines.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    lines.append("".join(current))
    return [line.strip() for line in lines if line.strip()]


def words(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    return list(lexer)


def parse_curl(where: str, arguments: list[str]) -> Curl:
    """The request one curl command line makes; AssertionError for what cannot be read."""
    method: str | None = None
    urls: list[str] = []
    headers: list[str] = []
    body = get = head = json_option = False
    position = 0
    while position < len(arguments):
        argument = arguments[position]
        option, value = argument, None
        if argument.startswith("--") and "=" in argument:
            option, value = argument.split("=", 1)
        elif re.fullmatch(r"-[A-Za-z]{2,}", argument):  # a cluster of short options
            letters = argument[1:]
            for offset, letter in enumerate(letters):
                if letter in SHORT_VALUE_LETTERS:
                    option, value = f"-{letter}", letters[offset + 1:] or None
                    break
                assert letter in SHORT_FLAG_LETTERS, f"{where}: unknown curl option -{letter}"
                get = get or letter == "G"
                head = head or letter == "I"
            else:
                position += 1
                continue
        if option in VALUE_OPTIONS:
            if value is None:
                position += 1
                assert position < len(arguments), f"{where}: {option} without a value"
                value = arguments[position]
            if option in ("-X", "--request"):
                method = value.upper()
            elif option in ("-H", "--header"):
                headers.append(value)
            elif option == "--url":
                urls.append(value)
            if option in BODY_OPTIONS:
                body = True
                json_option = json_option or option == "--json"
        elif option in FLAG_OPTIONS:
            get = get or option in ("-G", "--get")
            head = head or option in ("-I", "--head")
        else:
            assert not option.startswith("-"), f"{where}: unknown curl option {option}"
            urls.append(option)
        position += 1
    assert len(urls) == 1, f"{where}: expected one URL, got {urls}"
    url = urls[0]
    if method is None:
        method = "HEAD" if head else "POST" if body and not get else "GET"
    rest = re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://", "", url)
    slash = rest.find("/")
    path = "/" if slash < 0 else rest[slash:]
    path = re.split(r"[?#]", path, maxsplit=1)[0]
    json_type = json_option or any(
        re.fullmatch(r"content-type:\s*application/json(;.*)?", header.strip(), re.IGNORECASE)
        for header in headers)
    return Curl(where, " ".join(arguments), method, url, path, body and not get, json_type)


def curls_in(line: str, where: str) -> Iterator[Curl]:
    tokens = words(line)
    for start, token in enumerate(tokens):
        if token != "curl":
            continue
        end = start + 1
        while end < len(tokens) and not set(tokens[end]) <= PUNCTUATION:
            end += 1
        yield parse_curl(where, tokens[start + 1:end])


def curls(page: Page) -> list[Curl]:
    found: list[Curl] = []
    for language, start, code in page.blocks:
        if language in SHELL_LANGUAGES:
            for line in logical_lines(code):
                found += curls_in(line, f"{page.name} (code block at line {start})")
    for match in CODE_SPAN.finditer(page.prose):
        span = " ".join(match.group(2).split())
        if span.startswith("curl "):
            line_number = page.prose.count("\n", 0, match.start()) + 1
            found += curls_in(span, f"{page.name}:{line_number}")
    return found


def routes() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document()["paths"].items()
            for method in item if method in HTTP_METHODS}


def route_of(curl: Curl, known: set[tuple[str, str]]) -> tuple[str, str] | None:
    segments = curl.path.split("/")
    for method, template in sorted(known):
        parts = template.split("/")
        if method != curl.method or len(parts) != len(segments):
            continue
        if all((bool(segment) and part.startswith("{") and part.endswith("}"))
               or ("$" not in segment and segment == part)
               for segment, part in zip(segments, parts, strict=True)):
            return method, template
    return None


def describe(problems: list[str]) -> str:
    return "\n".join(problems)


@pytest.mark.parametrize("path", PAGES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    page = read_page(path)
    problems = [f"{page.name}:{line}: {problem}" for line, target in links(page)
                if (problem := link_problem(page, target)) is not None]
    assert not problems, describe(problems)


@pytest.mark.parametrize("path", PAGES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_curl_example_names_a_route(path: Path) -> None:
    known = routes()
    problems = [f"{curl.where}: {curl.method} {curl.path} is not a route of the service "
                f"(curl {curl.command})"
                for curl in curls(read_page(path)) if route_of(curl, known) is None]
    assert not problems, describe(problems)


@pytest.mark.parametrize("path", PAGES, ids=lambda path: str(path.relative_to(ROOT)))
def test_curl_bodies_are_json_with_ids_from_earlier_answers(path: Path) -> None:
    problems: list[str] = []
    for curl in curls(read_page(path)):
        if curl.body and not curl.json_content_type:
            problems.append(f"{curl.where}: a body without -H 'Content-Type: application/json' "
                            f"gets 415 (curl {curl.command})")
    page = read_page(path)
    for language, start, code in page.blocks:
        if language in SHELL_LANGUAGES:
            problems += [f"{page.name} (code block at line {start}): a hard-coded decision id "
                         f"in {line!r}; take it from an allocate answer (jq)"
                         for line in logical_lines(code) if DECISION_ID_PATTERN.search(line)]
    assert not problems, describe(problems)


def test_the_api_page_shows_every_route() -> None:
    page = read_page(API_PAGE)
    known = routes()
    shown = {route for curl in curls(page) if (route := route_of(curl, known)) is not None}
    missing = sorted(known - NOT_FOR_CURL - shown)
    assert not missing, f"docs/api.md has no curl example for {missing}"


def test_the_readme_keeps_the_test_command_marker() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert "<!-- test-command -->" in lines, "CI reads the test command after this marker"
    after = lines[lines.index("<!-- test-command -->") + 1:]
    assert after[0] == "```sh" and "pytest" in after[1] and after[2] == "```", after[:3]


def test_the_checks_see_what_they_check() -> None:
    """The parsers find the examples and links there are, and refuse broken ones."""
    pages = [read_page(path) for path in PAGES]
    assert sum(len(curls(page)) for page in pages) >= 30
    assert sum(1 for page in pages for _ in links(page)) >= 30
    page = read_page(API_PAGE)
    assert link_problem(page, "nowhere.md") is not None
    assert link_problem(page, "api.md#no-such-heading") is not None
    assert link_problem(page, "#decisions") is None
    known = routes()
    assert route_of(parse_curl("t", ["-s", "localhost:8080/v1/experiment"]), known) is None
    assert route_of(parse_curl("t", ["-X", "PUT", "localhost:8080/v1/events"]), known) is None
    assert route_of(parse_curl("t", ["localhost:8080/v1/experiments/$ID/stats?x=1"]), known) \
        == ("GET", "/v1/experiments/{id}/stats")
    assert route_of(parse_curl("t", ["localhost:8080/v1/$X"]), known) is None
    posted = parse_curl("t", ["-sd", "{}", "localhost:8080/v1/events"])
    assert (posted.method, posted.body, posted.json_content_type) == ("POST", True, False)
    assert slug("Rewards from a Redis Stream: `bandit worker`") \
        == "rewards-from-a-redis-stream-bandit-worker"
