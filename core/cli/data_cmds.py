"""`adlens ingest`, `adlens demo`, `adlens status`: getting data into the workspace."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from core.cli.output import add_json_flag, add_text_backend, positive_int, print_json
from core.common.escape import term
from core.store.catalog import table_counts
from core.store.db import make_engine, redact_url
from core.store.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show the workspace, database, table counts and leftovers of killed builds")
    p.add_argument("--clean", action="store_true", help="remove the leftovers of interrupted builds it lists")
    add_json_flag(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("ingest", help="validate and import a dataset directory (format: data/README.md)")
    p.add_argument("directory", type=Path, help="folder with ads.csv|parquet, impressions.csv|parquet, ...")
    p.add_argument("--replace", action="store_true",
                   help="delete every data row first (same transaction), instead of updating in place")
    add_json_flag(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("demo", help="generate the realistic demo dataset and import it")
    p.add_argument("--ads", type=positive_int, default=10_000, help="number of ads (default 10000)")
    p.add_argument("--users", type=positive_int, default=5_000, help="number of users (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--if-missing", action="store_true",
                   help="do nothing when the workspace already has a demo or imported data")
    p.add_argument("--replace", action="store_true", help="delete existing data rows first")
    p.add_argument("--serve", action="store_true",
                   help="also run the dashboard (streamlit run dashboard), from the moment the first version "
                        "is ready while the others build, until stopped (Ctrl-C): what `make run` does")
    add_text_backend(p)  # the demo's default is onnx-int8 (core.demo.pipeline.DEMO_TEXT_BACKEND)
    add_json_flag(p)
    p.set_defaults(func=cmd_demo)


TEXT_BACKEND_FROM = {"flag": "--text-backend", "env": "ADLENS_TEXT_BACKEND",
                     "workspace": "recorded in workspace.json", "default": "the default"}


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from core.store.debris import clean_debris, find_debris
    from core.store.readonly import database_read_only, folder_read_only

    engine = make_engine(settings.db_url)
    debris = clean_debris(settings) if args.clean else find_debris(settings)
    ro_ws, ro_db = folder_read_only(settings.workspace), database_read_only(engine)
    report = {
        "workspace": str(settings.workspace),
        "database": redact_url(settings.db_url),
        "read_only": {"workspace": ro_ws, "database": ro_db},
        "text_backend": {"backend": settings.text_backend, "from": settings.text_backend_from},
        "tables": table_counts(engine),
        "debris": [{"path": str(d.path), "bytes": d.bytes, "kind": d.kind, "age_s": round(d.age_s)} for d in debris],
        "debris_removed": bool(args.clean),
    }
    if args.json:
        print_json(report)
        return 0
    print(f"workspace: {term(report['workspace'])}" + (f" (read-only: {ro_ws})" if ro_ws else "")
          + f"\ndatabase:  {term(report['database'])}" + (f" (read-only: {term(ro_db)})" if ro_db else "")
          + f"\ntext backend: {settings.text_backend} ({TEXT_BACKEND_FROM[settings.text_backend_from]})")
    for name, n in report["tables"].items():
        print(f"  {name:<12} {n:>10,}")
    if debris:
        total = sum(d.bytes for d in debris)
        verb = "removed" if args.clean else "found"
        print(f"{verb} {len(debris)} leftover(s) of interrupted builds, {total / 2**20:,.1f} MiB:")
        for d in debris:
            print(f"  {d.bytes / 2**20:>8,.1f} MiB  {d.kind:<18} {term(d.path)}")
        if not args.clean:
            print("the workspace is read-only: its owner can remove them with `adlens status --clean`"
                  if ro_ws else "remove them with: adlens status --clean")
    return 0


def step_printer(enabled: bool):
    """A progress callback printing each new step name once to stderr."""
    last = [None]

    def progress(fraction: float, step: str) -> None:
        if enabled and step != last[0] and step != "done":
            last[0] = step
            print(f"  [{fraction:4.0%}] {term(step)}...", file=sys.stderr, flush=True)

    return progress


def _print_ingest(report) -> None:
    print(f"imported {term(report.directory)} in {report.seconds:.1f} s ("
          + ", ".join(f"{k} {v:.1f} s" for k, v in report.timings.items()) + ")")
    print(f"  {'table':<12} {'file':<22} {'rows':>9} {'inserted':>9} {'updated':>8} {'unchanged':>9} {'bare':>6}")
    for name, c in report.tables.items():
        print(f"  {name:<12} {term(c.file or '-'):<22} {c.rows:>9,} {c.inserted:>9,} {c.updated:>8,} "
              f"{c.unchanged:>9,} {c.created_bare:>6,}")
    for w in report.warnings:
        print(f"  warning: {term(w)}")


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from core.data.ingest import ingest_directory

    engine = make_engine(settings.db_url)
    try:
        report = ingest_directory(engine, args.directory, step_printer(not args.json), replace=args.replace)
        counts = table_counts(engine)
    finally:
        engine.dispose()
    if args.json:
        print_json({"report": report, "counts": counts})
        return 0
    _print_ingest(report)
    print("database now holds: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    return 0


DASHBOARD_DIR = Path(__file__).resolve().parents[2] / "dashboard"  # core/cli/ -> repository root


def start_dashboard(settings: Settings) -> subprocess.Popen:
    """`streamlit run dashboard` on this workspace (and database), in a child process."""
    env = {**os.environ, "ADLENS_HOME": str(Path(settings.workspace).resolve()), "ADLENS_DB_URL": settings.db_url}
    return subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(DASHBOARD_DIR)], env=env)


BUILD_NICENESS = 10


def _yield_to_dashboard() -> None:
    """Lower this process's CPU priority once its dashboard runs (the dashboard keeps its own): the
    demo's remaining build then takes the CPU the dashboard leaves, so the page the user is
    looking at does not wait for versions they have not opened (2 cores: a first view of Inspect
    took 21 s beside the build at normal priority)."""
    try:
        os.nice(BUILD_NICENESS)
    except OSError:  # not permitted here: build at the same priority
        pass


class _Server:
    """`adlens demo --serve`'s dashboard: started once, on the first ready version."""

    def __init__(self, settings: Settings, announce: bool) -> None:
        self.settings, self.announce, self.proc = settings, announce, None

    def start(self, version: str | None = None) -> None:
        if self.proc is None:
            if self.announce:
                print("starting the dashboard" + (f" on version {term(version)}; the other versions keep "
                                                  "building and appear in it when ready" if version else ""),
                      file=sys.stderr, flush=True)
            self.proc = start_dashboard(self.settings)
            _yield_to_dashboard()

    def wait(self) -> int:
        """Serve until the dashboard exits or Ctrl-C; its exit status (0 after Ctrl-C)."""
        if self.proc is None:
            return 0
        try:
            return self.proc.wait()
        except KeyboardInterrupt:
            self.proc.terminate()
            self.proc.wait()
            return 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    server = _Server(settings, announce=not args.json)
    try:
        code = _demo(args, settings, server if args.serve else None)
    except BaseException:
        server.stop()  # a failed or interrupted build takes its dashboard down with it
        raise
    return server.wait() if code == 0 else code


def _demo(args: argparse.Namespace, settings: Settings, server: _Server | None) -> int:
    from core.demo.pipeline import build_demo, workspace_state

    n_ads, n_users, seed = args.ads, args.users, args.seed
    if args.if_missing:
        state = workspace_state(settings)
        skip = None
        if state.has_demo:
            skip = f"the workspace already has a demo ({state.n_ads:,} ads); nothing to do"
        elif state.has_other_data:
            skip = f"the database already holds {state.n_ads:,} imported ads; not adding the demo"
        elif state.interrupted_demo:  # finish the interrupted build with its own parameters
            m = state.marker
            n_ads, n_users, seed = m.get("n_ads", n_ads), m.get("n_users", n_users), m.get("seed", seed)
        if skip:
            print_json({"skipped": True, "reason": skip}) if args.json else print(term(skip, keep_newlines=True))
            if server is not None:
                server.start()
            return 0
    if args.if_missing:
        from core.store.db import require_writable
        from core.store.readonly import BOTH

        require_writable(settings, "demo", BOTH)
    report = build_demo(settings, n_ads=n_ads, n_users=n_users, seed=seed,
                        progress=step_printer(not args.json), replace=args.replace,
                        on_version=None if server is None else server.start)
    if args.json:
        print_json(report)
        return 0
    print(f"demo built in {report.seconds:.1f} s (workspace {term(report.workspace)}, "
          f"{report.n_ads:,} ads, {report.n_users:,} users, seed {report.seed}, text backend {report.text_backend})")
    for s in report.steps:
        print(f"  {s.name:<14} {s.seconds:7.1f} s  (cpu {s.cpu_seconds:6.1f} s)")
    if report.ingest is not None:
        _print_ingest(report.ingest)
    print("database now holds: " + ", ".join(f"{k} {v:,}" for k, v in report.counts.items()))
    print(f"dataset files (ingest format): {term(report.data_dir)}")
    return 0
