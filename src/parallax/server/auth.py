"""Bearer tokens for the control plane.

- The admin token: `PARALLAX_TOKEN`, or one generated on first start and kept in a 0600 file.
- Run-scoped tokens, issued to workers and agents: `prx1.<run>.<expiry>.<signature>`, an
  HMAC-SHA256 over the run id and expiry with a key derived from the admin token. A run-scoped
  token reaches only its run's endpoints and streams (`runs/<run>/...`); an expired, altered or
  other-run token is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from parallax.core.runstreams import RunStreams
from parallax.project import ensure_folder

PREFIX = "prx1"


@dataclass(frozen=True)
class Principal:
    admin: bool
    run: str | None = None  # the run a scoped token is limited to

    def may_access_run(self, run_id: str) -> bool:
        return self.admin or self.run == run_id

    def may_access_stream(self, stream: str) -> bool:
        return self.admin or (self.run is not None and (stream.startswith(RunStreams(self.run).prefix)))


def load_or_create_token(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    ensure_folder(path.parent)  # a .parallax/ folder is made git-ignored (the token is a shell)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


class Tokens:
    def __init__(self, admin_token: str) -> None:
        self.admin_token = admin_token
        self._key = hashlib.sha256(b"parallax run tokens\0" + admin_token.encode()).digest()

    def _sign(self, run_id: str, expiry: int) -> str:
        mac = hmac.new(self._key, f"{run_id}\0{expiry}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def issue(self, run_id: str, ttl_s: float) -> tuple[str, int]:
        expiry = int(time.time() + ttl_s)
        run = base64.urlsafe_b64encode(run_id.encode()).decode().rstrip("=")
        return f"{PREFIX}.{run}.{expiry}.{self._sign(run_id, expiry)}", expiry

    def check(self, token: str | None) -> Principal | None:
        """The principal a token stands for, or None when it is missing, wrong or expired."""
        if not token:
            return None
        if hmac.compare_digest(token.encode(), self.admin_token.encode()):
            return Principal(admin=True)
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != PREFIX:
            return None
        try:
            run_id = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)).decode()
            expiry = int(parts[2])
        except ValueError:
            return None
        if not hmac.compare_digest(parts[3], self._sign(run_id, expiry)) or expiry < time.time():
            return None
        return Principal(admin=False, run=run_id)
