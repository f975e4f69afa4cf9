"""API keys: named, scoped, stored hashed, checked in constant time.

A key is ``bk_`` followed by 256 random bits (URL-safe base64). The keys file, written by
``bandit keys new`` and read by ``bandit serve --api-keys FILE`` (or ``BANDIT_API_KEYS_FILE``),
holds one line per key and never the key itself::

    # name      scopes             hash of the key
    ranker      decide             sha256:5c1e...
    dashboard   read,admin         sha256:9f0b...

``BANDIT_API_KEYS`` may hold the same lines (newline- or ``;``-separated) instead of a file.

Why SHA-256 and not a slow password hash: a key has 256 bits of entropy, so nobody can guess
it back from its hash however fast the hash is; a slow hash protects low-entropy passwords and
would cost milliseconds on every request. The presented key's hash is compared with every
configured hash with ``hmac.compare_digest`` and no early exit, so the time taken says nothing
about which key (or how much of one) matched.

Scopes: ``decide`` (allocate, report rewards), ``read`` (show, list, stats, history, audit,
metrics), ``admin`` (create, change, archive, advise). A key holds any set of them; none
implies another.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bandit.errors import Forbidden, Unauthorized
from bandit.model import ANONYMOUS

SCOPES = ("decide", "read", "admin")
KEY_PREFIX = "bk_"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_HASH_PATTERN = re.compile(r"sha256:([0-9a-f]{64})")


class KeysFileError(ValueError):
    """A keys file (or BANDIT_API_KEYS) line the service cannot use; names the line."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request comes from: the key's name and what it may do."""

    name: str
    scopes: frozenset[str]


OPEN = Principal(ANONYMOUS, frozenset(SCOPES))


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    digest: bytes


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(text: str) -> frozenset[str]:
    scopes = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(scopes - set(SCOPES))
    if unknown or not scopes:
        raise KeysFileError(
            f"scopes {text!r}: expected a comma-separated subset of {', '.join(SCOPES)}"
        )
    return scopes


def key_line(name: str, scopes: Iterable[str], key: str) -> str:
    """The keys-file line for ``key`` (its hash, never the key)."""
    if not NAME_PATTERN.fullmatch(name):
        raise KeysFileError(f"name {name!r}: expected 1 to 64 letters, digits or _.@- "
                            "(starting with a letter or digit)")
    ordered = [scope for scope in SCOPES if scope in set(scopes)]
    return f"{name} {','.join(ordered)} {hash_key(key)}"


class KeyRing:
    """The configured keys; ``authenticate`` turns an Authorization header into a Principal.

    ``keyed``: the service enforces keys. A keyed ring with no entries (every key revoked, the
    file emptied or gone) lets nobody in; only a ring that was never keyed is open.
    """

    def __init__(self, entries: Iterable[_Entry], *, keyed: bool | None = None) -> None:
        self._entries = tuple(entries)
        self._keyed = bool(self._entries) if keyed is None else keyed

    @property
    def enabled(self) -> bool:
        return self._keyed

    @property
    def names(self) -> list[str]:
        return [entry.principal.name for entry in self._entries]

    def scopes_by_name(self) -> dict[str, frozenset[str]]:
        return {entry.principal.name: entry.principal.scopes for entry in self._entries}

    @classmethod
    def parse(cls, text: str, source: str) -> KeyRing:
        entries: list[_Entry] = []
        seen: set[str] = set()
        for number, raw in enumerate(re.split(r"[\n;]", text), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            where = f"{source} line {number}"
            if len(parts) != 3:
                raise KeysFileError(f"{where}: expected 'NAME SCOPES sha256:HEX', got {line!r}")
            name, scopes, hashed = parts
            if not NAME_PATTERN.fullmatch(name):
                raise KeysFileError(f"{where}: {name!r} is not a valid key name")
            if name in seen:
                raise KeysFileError(f"{where}: key name {name!r} appears twice")
            match = _HASH_PATTERN.fullmatch(hashed)
            if match is None:
                raise KeysFileError(f"{where}: {hashed!r} is not 'sha256:' and 64 hex digits")
            try:
                scope_set = parse_scopes(scopes)
            except KeysFileError as error:
                raise KeysFileError(f"{where}: {error}") from None
            seen.add(name)
            entries.append(_Entry(Principal(name, scope_set), bytes.fromhex(match.group(1))))
        return cls(entries)

    @classmethod
    def load(cls, path: Path | None, inline: str | None) -> KeyRing:
        """Keys from a file and/or inline text (``BANDIT_API_KEYS``); empty when neither."""
        text, sources = "", []
        if path is not None:
            try:
                text += path.read_text() + "\n"
            except OSError as error:
                raise KeysFileError(f"api_keys_file: cannot read {str(path)!r}: "
                                    f"{error.strerror}") from error
            sources.append(str(path))
        if inline:
            text += inline
            sources.append("BANDIT_API_KEYS")
        ring = cls.parse(text, " + ".join(sources) or "keys")
        if (path is not None or inline) and not ring.enabled:
            raise KeysFileError(f"{' + '.join(sources)}: no keys in it; refusing to run open "
                                "by accident")
        return ring

    def authenticate(self, header: str | None) -> Principal:
        """The principal of a ``Bearer`` header; ``OPEN`` when the service runs without keys."""
        if not self._keyed:
            return OPEN
        if header is None:
            raise Unauthorized("this endpoint needs an API key: send 'Authorization: Bearer KEY'")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("Authorization header must be 'Bearer KEY'")
        try:
            digest = hashlib.sha256(key.strip().encode()).digest()
        except UnicodeEncodeError:  # aiohttp passes undecodable header bytes as surrogates
            raise Unauthorized("the API key is not valid") from None
        found: Principal | None = None
        for entry in self._entries:  # no early exit: constant time over the key list
            if hmac.compare_digest(digest, entry.digest):
                found = entry.principal
        if found is None:
            raise Unauthorized("the API key is not valid")
        return found


def authorize(principal: Principal, scope: str, action: str) -> None:
    if scope not in principal.scopes:
        raise Forbidden(f"key {principal.name!r} (scopes {','.join(sorted(principal.scopes))}) "
                        f"may not {action}: that needs the {scope!r} scope")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class KeysSource:
    """The key ring of a running service, re-read when its file changes.

    Operators add or revoke a key by editing the file; every process picks the change up within
    ``KEYS_RELOAD_S`` without a restart. Started with keys, the service stays keyed: a file that
    becomes empty, unreadable, invalid or goes missing lets nobody in (``reload`` raises, and
    the ring refuses every key) until it is fixed. It never keeps keys the file no longer
    holds, and never opens.
    """

    def __init__(self, path: Path | None, inline: str | None) -> None:
        self.path = path
        self.inline = inline
        self._mtime = self._stamp()
        self.ring = KeyRing.load(path, inline)

    def _stamp(self) -> tuple[float, int] | None:
        if self.path is None:
            return None
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime, stat.st_size

    def reload(self) -> bool:
        """Re-read the file if it changed; True when the ring changed.

        Raises KeysFileError when the file can no longer be used; the ring then refuses every
        key (a keyed service never falls back to earlier keys, nor to running open).
        """
        stamp = self._stamp()
        if stamp == self._mtime:
            return False
        self._mtime = stamp
        try:
            self.ring = KeyRing.load(self.path, self.inline)
        except KeysFileError:
            self.ring = KeyRing((), keyed=True)
            raise
        return True


#: How often a running service checks its keys file for changes.
KEYS_RELOAD_S = 1.0
