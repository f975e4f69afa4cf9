"""``bandit keys``: create, list and revoke the API keys in a keys file (see bandit.api.auth)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bandit.api.auth import SCOPES, KeyRing, KeysFileError, key_line, new_key, parse_scopes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="keys_command", required=True)
    new = commands.add_parser(
        "new", help="create a key: prints it once, stores only its hash",
        description="Create an API key. The key is printed once on stdout; the file gets its "
                    "name, scopes and SHA-256 hash (created with mode 0600 if missing).")
    new.add_argument("name", help="recorded in the audit log as the actor of its changes")
    new.add_argument("--scopes", required=True, type=_scopes,
                     help=f"comma-separated subset of {','.join(SCOPES)}")
    new.add_argument("--file", required=True, type=Path, help="the keys file")
    listing = commands.add_parser("list", help="names and scopes in a keys file")
    listing.add_argument("--file", required=True, type=Path)
    revoke = commands.add_parser(
        "revoke", help="remove a key by name",
        description="Remove the named key from the file; running services stop accepting it "
                    "within a second.")
    revoke.add_argument("name")
    revoke.add_argument("--file", required=True, type=Path)


def _scopes(text: str) -> frozenset[str]:
    try:
        return parse_scopes(text)
    except KeysFileError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run(arguments: argparse.Namespace) -> int:
    try:
        if arguments.keys_command == "new":
            return _new(arguments.name, arguments.scopes, arguments.file)
        if arguments.keys_command == "list":
            return _list(arguments.file)
        return _revoke(arguments.name, arguments.file)
    except KeysFileError as error:
        print(f"bandit keys: {error}", file=sys.stderr)
        return 2


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
    except OSError as error:
        raise KeysFileError(f"cannot read {str(path)!r}: {error.strerror}") from error


def _new(name: str, scopes: frozenset[str], path: Path) -> int:
    existing = _read(path)
    if name in KeyRing.parse(existing, str(path)).names:
        raise KeysFileError(f"{str(path)!r} already has a key named {name!r}; revoke it first "
                            "or pick another name")
    key = new_key()
    line = key_line(name, scopes, key)
    # O_APPEND: one short write, so a concurrent reader sees the old file or the new line.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(descriptor, "a") as keys_file:
        if existing and not existing.endswith("\n"):
            keys_file.write("\n")
        keys_file.write(line + "\n")
    print(key)
    print(f"key {name!r} ({','.join(sorted(scopes))}) added to {path}; it is shown only once",
          file=sys.stderr)
    return 0


def _list(path: Path) -> int:
    ring = KeyRing.parse(_read(path), str(path))
    for name, scopes in ring.scopes_by_name().items():
        print(f"{name}\t{','.join(scope for scope in SCOPES if scope in scopes)}")
    return 0


def _revoke(name: str, path: Path) -> int:
    lines = _read(path).splitlines(keepends=True)
    kept = [line for line in lines if line.split("#", 1)[0].split()[:1] != [name]]
    if len(kept) == len(lines):
        raise KeysFileError(f"{str(path)!r} has no key named {name!r}")
    # Write a sibling and rename: a service reading the file sees the old or the new one.
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as keys_file:
        keys_file.writelines(kept)
    temporary.replace(path)
    print(f"key {name!r} revoked in {path}", file=sys.stderr)
    if not KeyRing.parse("".join(kept), str(path)).names:
        print(f"{path} holds no keys now: services reading it refuse every request (401) until "
              "a key is added", file=sys.stderr)
    return 0
