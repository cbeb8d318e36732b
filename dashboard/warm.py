"""Warm the dashboard server's caches as it starts, before the first browser asks for a page.

`streamlit run dashboard` (dashboard/streamlit_app.py) calls `start_warm_up` from its lifespan
and waits for it (up to a bound) before the server answers. One background thread does, in order,
what every page's first view needs first:

1. imports the pages and what they use (pandas, Plotly, FAISS, the funnel; ~1.5 s on 2 cores);
2. loads the catalog and the version list;
3. opens the newest version's funnel engine (the version the pages open on; its pCTR model is
   read from the workspace cache when `adlens demo` or an earlier server saved it);
4. opens the engine of Compare's default version B (the next newest), the one other engine a
   first view needs (0.5-0.7 s of Compare's at 10k ads).

Each step fills the same `st.cache_resource` entry a page would, so a page that asks for it while
the thread is still computing waits for that one computation (Streamlit's per-key compute lock)
instead of starting a second. A failure is left for the page to show: the thread records it in the
timing log and stops. Nothing is warmed for the AppTest harness, which runs dashboard/router.py
directly.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

WARM_BEFORE_SERVING_S = 20.0  # the longest the server waits for the warm-up before it answers
_started = threading.Event()


def start_warm_up() -> threading.Thread | None:
    """Start `warm_up` in a daemon thread, once per process; None when it was already started."""
    if _started.is_set():
        return None
    _started.set()
    thread = threading.Thread(target=warm_up, name="adlens-warm-up", daemon=True)
    thread.start()
    return thread


def _say(msg: str) -> None:
    print(msg, flush=True)


async def wait_for_warm_up(bound_s: float = WARM_BEFORE_SERVING_S, say: Callable[[str], None] = _say) -> bool:
    """Start the warm-up and wait for it, at most `bound_s`, saying so on the terminal (the server's
    lifespan: it answers no request meanwhile). True when it is over; False when it goes on (or
    was started before)."""
    thread = start_warm_up()
    if thread is None:
        return False
    say(f"  AdLens: loading the workspace; the URL answers once it is loaded (at most {bound_s:.0f} s)...")
    t0 = time.monotonic()
    # polled, not joined: Ctrl-C during the wait stops the server at once
    while thread.is_alive() and time.monotonic() - t0 < bound_s:
        await asyncio.sleep(0.05)
    waited = time.monotonic() - t0
    if thread.is_alive():
        say(f"  AdLens: serving after {waited:.0f} s; the rest loads while the first pages open")
        return False
    say(f"  AdLens: ready after {waited:.1f} s")
    return True


def import_pages() -> None:
    """Import every page module of dashboard/views (and so what the pages use)."""
    import importlib
    import pkgutil

    import dashboard.views as views

    importlib.import_module("dashboard.sidebar")
    for mod in pkgutil.iter_modules(views.__path__):
        importlib.import_module(f"{views.__name__}.{mod.name}")


def warm_up() -> list[str]:
    """Do the warm-up steps (module docstring) in this thread; the steps done, in order."""
    t0 = time.perf_counter()
    done: list[str] = []
    # Cached functions called outside a script run log "missing ScriptRunContext" once per call.
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").setLevel(logging.ERROR)
    try:
        import_pages()
        done.append("imports")
        from dashboard import state

        state.steps().record("warm imports", time.perf_counter() - t0)
        names = state.version_names()
        cat = state.catalog()
        done.append("catalog")
        if names and cat.n_ads:
            from dashboard.views.compare import default_b

            newest, b = names[-1], default_b(names, names[-1])  # the version the pages open on; Compare's B
            state.warm_engine(newest)
            done.append("engine")
            if b != newest:
                state.warm_engine(b)
                done.append("compare's engine")
        state.steps().record("warm up", time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 (the page that needs it loads it again and shows why)
        try:
            from dashboard import state

            state.steps().record(f"warm up failed after {'/'.join(done) or 'nothing'}: {exc}",
                                 time.perf_counter() - t0)
        except Exception:  # noqa: BLE001 (no timing log either: nothing more to say)
            pass
    return done
