"""Which web pages may talk to the service: same-origin only, unless an operator allows more.

A browser lets any page send a "simple" request (a POST with a ``text/plain`` or form body)
to any address, including ``127.0.0.1``, and DNS rebinding lets a page read answers from a
name that resolves to it. An open (keyless) service on loopback trusts whoever reaches it, so
three checks keep pages the operator merely visits out:

- a request body must be ``application/json`` (415 otherwise): a page cannot send that
  cross-origin without a CORS preflight, which is refused;
- a request with an ``Origin`` header from anywhere but the service's own address is refused
  (403), unless the origin is in ``cors_origins``; allowed origins get CORS headers;
- an open service answers only requests addressed (``Host``) to a loopback name, its bind
  address or a name in ``allowed_hosts``: a rebinding page's requests carry its own name.

A keyed service skips the ``Host`` check (behind a load balancer it is reached by any name),
and a page cannot present a key it does not have.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bandit.errors import Forbidden

__all__ = ["OriginPolicy"]

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


@dataclass
class OriginPolicy:
    #: Origins (``scheme://host[:port]``) whose pages may call the API, with CORS headers.
    cors_origins: frozenset[str]
    #: Host names an open service answers besides loopback; None: any (a keyed service).
    allowed_hosts: frozenset[str] | None
    #: Host headers already found to be ours: the check runs on every request of an open
    #: service, and a process sees only a handful of spellings.
    _ours: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, *, keyed: bool, bind_host: str, cors_origins: Iterable[str],
           allowed_hosts: Iterable[str]) -> OriginPolicy:
        hosts = None if keyed else frozenset(
            {bind_host.strip("[]").lower(), *(h.lower() for h in allowed_hosts)})
        return cls(frozenset(o.rstrip("/").lower() for o in cors_origins), hosts)

    def check(self, origin: str | None, host: str | None) -> str | None:
        """The origin to name in CORS headers (an allowed cross-origin page), else None.

        Raises Forbidden for a foreign origin or, on an open service, a foreign Host.
        """
        if self.allowed_hosts is not None and host is not None and host not in self._ours \
                and not self._our_host(host):
            raise Forbidden(
                f"Host {host!r} is not this service's: a service without API keys answers only "
                "requests addressed to localhost or its bind address (add names with "
                "BANDIT_ALLOWED_HOSTS)")
        if origin is None:
            return None
        normalised = origin.lower()
        if host is not None and urlsplit(normalised).netloc == host.lower():
            return None  # the service's own pages (the dashboard)
        if normalised in self.cors_origins:
            return origin
        raise Forbidden(f"cross-origin request from {origin!r} refused: only the service's own "
                        "pages may call it (allow an origin with BANDIT_CORS_ORIGINS)")

    def _our_host(self, host: str) -> bool:
        name = _host_name(host)
        assert self.allowed_hosts is not None
        ours = name in _LOOPBACK_NAMES or name in self.allowed_hosts
        if not ours:
            try:
                ours = ipaddress.ip_address(name).is_loopback
            except ValueError:
                ours = False
        if ours and len(self._ours) < 64:
            self._ours.add(host)
        return ours


def _host_name(host: str) -> str:
    """The name in a Host header, without its port: ``[::1]:8080`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
