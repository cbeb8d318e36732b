"""Joining a Ray cluster (the ray serving backend, `adlens embed --ray`): one place, fail fast.

An already-initialised Ray in this process (tests, notebooks) is used as is. Otherwise the
address is ``ADLENS_RAY_ADDRESS`` (settings.ray_address): ``auto`` (the cluster `ray start`
recorded on this machine) or ``host:port``. A host:port that does not accept a connection fails
at once (ray.init would keep retrying it) with how to start a cluster.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from core.common.errors import AdLensError

CONNECT_TIMEOUT_S = 3.0
START_HINT = ("start a local cluster with `ray start --head --node-ip-address=127.0.0.1` and set "
              "ADLENS_RAY_ADDRESS=auto (or host:port), or drop `--backend ray` / `--ray` to run in-process")


def connect(address: str | None = None) -> None:
    """Join the Ray cluster at `address` unless Ray is already initialised in this process."""
    if address not in (None, "auto", "local") and "RAY_AUTH_MODE" not in os.environ and _has_token():
        # Ray turns token auth on by itself only for a cluster it finds ("auto"); joining by
        # host:port without it loops on "Unauthenticated". Read when Ray starts: set it first.
        os.environ["RAY_AUTH_MODE"] = "token"
    import ray

    if ray.is_initialized():
        return
    address = address or "auto"
    if address not in ("auto", "local") and not address.startswith("ray://"):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise AdLensError(f"ADLENS_RAY_ADDRESS {address!r} is not `auto` or host:port; {START_HINT}")
        try:  # fail fast: ray.init would keep retrying an address nobody answers at
            socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            raise AdLensError(f"no Ray cluster answers at {address} ({exc.strerror or exc}); {START_HINT}") from exc
    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise AdLensError(f"cannot join a Ray cluster at {address!r}: {str(exc).splitlines()[0]}; "
                          f"{START_HINT}") from exc


def _has_token() -> bool:
    """Whether a Ray auth token is configured (env, or the file `ray start` writes)."""
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file())
