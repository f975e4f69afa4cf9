"""The documentation's examples, run as written: every ``curl`` example of the README and the API
page, top to bottom, against a fresh service, each answer checked against what the page shows.

Each page's shell blocks that talk to the service (those naming ``localhost:8080``) are joined
into one bash script, in page order, so variables one example sets (``ANSWER=$(curl ...)``)
are there for the next, as in a reader's terminal. The only edits are the port, and a pause
between blocks, as a reader takes: the history example needs samples, which the service takes
twice per history interval (0.5 s here) once it has served or learnt something. ``curl`` is
wrapped by a shell function that records the status and body of every call, in order; then,
call by call:

- the call answered 2xx, unless the page shows an error answer (``{"error": ...}``);
- every field name the page shows in the answer (``# {"accepted":1,...}``, on the lines after
  the command or at the end of its line) is a field of the real answer, at some depth.

So a page cannot show an example that stopped working (a decision id copied from someone
else's run, a forecast the service refuses as too slow, an experiment archived before the
examples that need it), nor an answer whose fields were renamed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServiceProcess
from tests.test_docs import ROOT, SHELL_LANGUAGES, read_page

PAGES = [ROOT / "README.md", ROOT / "docs" / "api.md", ROOT / "docs" / "contextual.md",
         ROOT / "docs" / "decision-log.md", ROOT / "docs" / "layers.md",
         ROOT / "docs" / "guardrails.md"]
DOCUMENTED_HOST = "localhost:8080"
#: A ``curl`` command at the start of a line, after a pipe, or in ``$(...)``.
CURL = re.compile(r"(?:^|[|(]\s*)curl\s")
#: Seconds between blocks: two history intervals of the service under test.
READER_PAUSE_S = 1.0
FIELD = re.compile(r'"([A-Za-z_][A-Za-z0-9_]*)"\s*:')

#: The wrapper: each call's status and body land in $LOG, named by the time of the call.
PRELUDE = r"""
set -u
curl() {
    local record="$LOG/$(date +%s%N)"
    command curl "$@" -o "$record.body" -w '%{http_code}' > "$record.status"
    local code=$?
    cat "$record.body"
    return $code
}
"""


@dataclass
class Call:
    line: int
    command: str
    #: The answer the page shows, as written (``...`` elisions and all), or "".
    shown: str = ""


@dataclass
class Example:
    page: str
    script: list[str] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)


def examples(path: Path) -> Example:
    page = read_page(path)
    example = Example(page.name)
    for language, start, text in page.blocks:
        if language not in SHELL_LANGUAGES or DOCUMENTED_HOST not in text:
            continue
        example.script.append(text)
        answering: Call | None = None
        for number, line in enumerate(text.splitlines(), start=start + 1):
            stripped = line.strip()
            if stripped.startswith("#"):
                comment = stripped.lstrip("#").strip()
                if answering is not None and (answering.shown or comment[:1] in "{["):
                    answering.shown += comment
                continue
            code, _, trailing = line.partition(" # ")
            if CURL.search(code.strip()):
                answering = Call(number, code.strip())
                example.calls.append(answering)
                if trailing.strip()[:1] in "{[":
                    answering.shown = trailing.strip()
    return example


def run(example: Example, port: int, log: Path) -> subprocess.CompletedProcess[str]:
    pause = f"\nsleep {READER_PAUSE_S}\n"
    script = PRELUDE + pause.join(example.script).replace(DOCUMENTED_HOST, f"localhost:{port}")
    # In the log's directory: what an example writes (an export) lands there.
    return subprocess.run(["bash", "-c", script], env={"LOG": str(log), "PATH": _path()},
                          cwd=log, capture_output=True, text=True, timeout=300, check=False)


def _path() -> str:
    """The test run's PATH, after the directory of its Python: a reader who installed the
    service runs ``bandit`` from there."""
    import os
    import sys
    return f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


def recorded(log: Path) -> list[tuple[int, str]]:
    records = sorted(log.glob("*.status"), key=lambda path: int(path.stem))
    return [(int(path.read_text() or 0), path.with_suffix(".body").read_text())
            for path in records]


def field_names(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from field_names(item)
    elif isinstance(value, list):
        for item in value:
            yield from field_names(item)


def problems(example: Example, answers: list[tuple[int, str]]) -> list[str]:
    found = []
    for call, (status, body) in zip(example.calls, answers, strict=True):
        where = f"{example.page}:{call.line} `{call.command[:60]}`"
        shows_error = call.shown.startswith('{"error"')
        if not (400 <= status < 500 if shows_error else 200 <= status < 300):
            found.append(f"{where}: HTTP {status}: {body[:300]}")
            continue
        if not call.shown:
            continue
        try:
            answer = json.loads(body)
        except ValueError:
            found.append(f"{where}: the page shows JSON, the service answered {body[:200]!r}")
            continue
        missing = sorted(set(FIELD.findall(call.shown)) - set(field_names(answer)))
        if missing:
            found.append(f"{where}: the page shows field(s) {missing} the answer lacks: "
                         f"{body[:300]}")
    return found


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", PAGES, ids=[path.name for path in PAGES])
def test_the_examples_run_top_to_bottom(path: Path, tmp_path: Path,
                                        service_process: Callable[..., ServiceProcess]) -> None:
    for tool in ("curl", "jq"):
        assert shutil.which(tool), f"{tool} is missing: sh tests/install-system.sh installs it"
    example = examples(path)
    assert example.calls, f"{example.page} has no curl example against {DOCUMENTED_HOST}"
    # History samples every half second, so the history example has some to show.
    service = service_process(extra_env={"BANDIT_HISTORY_INTERVAL_S": "0.5",
                                         "BANDIT_SERVED_FLUSH_INTERVAL_S": "0.1"})
    result = run(example, service.port, tmp_path)
    answers = recorded(tmp_path)
    assert len(answers) == len(example.calls), (
        f"{example.page}: {len(example.calls)} curl examples, {len(answers)} calls made\n"
        f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}")
    assert not problems(example, answers), "\n".join(problems(example, answers))
