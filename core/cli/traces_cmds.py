"""`adlens import-traces`, `adlens logged`, `adlens export-traces`, `adlens parity`: production's
logged funnel traces, AdLens's replay written in their format, and how far the two agree."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.cli.data_cmds import step_printer
from core.cli.output import add_json_flag, positive_int, print_json, text_frame
from core.common.escape import term
from core.common.progress import cli_progress
from core.store.db import make_engine
from core.store.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-traces", help="validate and import logged funnel traces (format: data/README.md)")
    p.add_argument("directory", type=Path, help="folder with requests.csv|parquet and trace_candidates.csv|parquet")
    p.add_argument("--replace", action="store_true",
                   help="replace every trace imported before (same transaction) instead of adding to them")
    add_json_flag(p)
    p.set_defaults(func=cmd_import_traces)

    p = sub.add_parser("logged", help="list logged requests (by user and time, or by id) or show one")
    p.add_argument("--request", metavar="ID", help="show this logged request with its candidates")
    p.add_argument("--user", metavar="U", help="only this user's requests")
    p.add_argument("--since", metavar="T", help="from this time (ISO 8601, UTC)")
    p.add_argument("--until", metavar="T", help="before this time (ISO 8601, UTC)")
    p.add_argument("--limit", type=positive_int, default=50, help="requests listed (default 50)")
    p.add_argument("--verify", action="store_true",
                   help="check every trace set's files against their recorded sha256 (reads every byte)")
    add_json_flag(p)
    p.set_defaults(func=cmd_logged)

    p = sub.add_parser("export-traces", help="write AdLens's own replay of sampled requests as logged traces "
                       "(the import-traces format)")
    p.add_argument("--version", required=True, help="the version to replay on")
    p.add_argument("--requests", type=positive_int, default=100, help="requests sampled and replayed (default 100)")
    p.add_argument("--out", type=Path, required=True, help="a new or empty folder for the two Parquet files")
    p.add_argument("--seed", type=int, default=0)
    add_json_flag(p)
    p.set_defaults(func=cmd_export_traces)

    p = sub.add_parser("parity", help="replay logged requests on a version: slate overlap, recall, the rules and "
                       "sources that disagree")
    p.add_argument("--version", required=True, help="the version to replay on")
    p.add_argument("--requests", type=positive_int, default=1000,
                   help="logged requests sampled (default 1000; all when fewer are imported)")
    p.add_argument("--seed", type=int, default=0)
    add_json_flag(p)
    p.set_defaults(func=cmd_parity)


def _print_missing(label: str, m, what: str) -> None:
    if m.ids:
        ex = ", ".join(term(x) for x in m.examples)
        print(f"  {label} the catalog lacks: {m.ids:,} ({m.rows:,} {what}), e.g. {ex} — kept; import them with "
              "`adlens ingest` to replay those")


def cmd_import_traces(args: argparse.Namespace, settings: Settings) -> int:
    from core.traces.importer import import_traces

    engine = make_engine(settings.db_url)
    try:
        rep = import_traces(settings, engine, args.directory, step_printer(not args.json), replace=args.replace)
    finally:
        engine.dispose()
    if args.json:
        print_json(rep)
        return 0
    verb = "unchanged (already imported)" if rep.status == "unchanged" else "imported"
    print(f"{verb}: {term(rep.directory)} as trace set {rep.set_id} in {rep.seconds:.1f} s: "
          f"{rep.n_requests:,} requests, {rep.n_candidates:,} candidates ({rep.bytes / 2**20:,.1f} MiB)")
    if rep.timings:
        print("  " + ", ".join(f"{k} {v:.1f} s" for k, v in rep.timings.items()))
    print("  stage reached: " + ", ".join(f"{k} {v:,}" for k, v in rep.stages.items()))
    print("  sources: " + ", ".join(f"{term(k)} {v:,}" for k, v in rep.sources.items()))
    if rep.unknown_sources:
        print("  sources AdLens does not have (kept as logged): " + ", ".join(term(s) for s in rep.unknown_sources))
    if rep.unknown_reasons:
        print("  reason codes AdLens does not emit (kept as logged): "
              + ", ".join(term(s) for s in rep.unknown_reasons))
    _print_missing("ads", rep.missing_ads, "candidate rows")
    _print_missing("users", rep.missing_users, "requests")
    if rep.extra_context:
        print("  extra context columns kept: " + ", ".join(term(c) for c in rep.extra_context))
    if rep.replaced_sets:
        print(f"  replaced trace set(s): {', '.join(rep.replaced_sets)}")
    for w in rep.warnings:
        print(f"  warning: {term(w)}")
    return 0


def cmd_logged(args: argparse.Namespace, settings: Settings) -> int:
    from core.traces.logged import list_logged_requests, load_logged_request, verify_trace_sets

    engine = make_engine(settings.db_url)
    try:
        if args.verify:
            checked = verify_trace_sets(settings, engine)
            if args.json:
                print_json({"verified": checked})
            else:
                print(f"{len(checked)} trace set(s) verified: " + ", ".join(
                    f"{c['set_id']} ({c['n_requests']:,} requests, {c['n_candidates']:,} candidates)" for c in checked))
            return 0
        if args.request:
            lr = load_logged_request(settings, engine, args.request)
            if args.json:
                print_json({"request_id": lr.request_id, "request": lr.request.to_dict(), "extra": lr.extra,
                            "set_id": lr.set_id, "stage_counts": lr.stage_counts(),
                            "unknown_sources": lr.unknown_sources(), "candidates": lr.candidates})
                return 0
            r = lr.request
            print(f"logged request {term(lr.request_id)}: user {term(r.user_id)} at {r.ts.isoformat()}, "
                  f"{term(r.placement)} / {term(r.community_id or '-')} / {term(r.device)} / {term(r.country)}")
            if lr.extra:
                print("  extra context: " + ", ".join(f"{term(k)}={term(v)}" for k, v in lr.extra.items()))
            print("  reached: " + ", ".join(f"{k} {v:,}" for k, v in lr.stage_counts().items()))
            if lr.unknown_sources():
                print("  sources AdLens does not have: " + ", ".join(term(s) for s in lr.unknown_sources()))
            frame = lr.candidates.copy()
            for c in ("sources", "reasons", "source_ranks", "source_scores"):
                frame[c] = frame[c].map(lambda xs: "|".join(map(str, xs)))
            print(text_frame(frame).to_string(index=False))
            return 0
        frame = list_logged_requests(engine, user_id=args.user, start=args.since, end=args.until, limit=args.limit)
    finally:
        engine.dispose()
    if args.json:
        print_json({"requests": frame})
        return 0
    if not len(frame):
        print("no logged requests match" + ("" if args.user or args.since or args.until else
                                            "; import some with `adlens import-traces DIR`"))
        return 0
    frame = frame.assign(extra=frame["extra"].map(lambda d: ", ".join(f"{k}={v}" for k, v in d.items())))
    print(text_frame(frame).to_string(index=False))
    return 0


def cmd_export_traces(args: argparse.Namespace, settings: Settings) -> int:
    from core.funnel.engine import open_engine
    from core.traces.export import export_replay

    engine = open_engine(settings, args.version)
    rep = export_replay(engine, args.out, args.requests, seed=args.seed, progress=cli_progress(not args.json))
    if args.json:
        print_json(rep)
        return 0
    print(f"wrote {rep.n_requests:,} requests, {rep.n_candidates:,} candidates replayed on {term(rep.version)} "
          f"to {term(rep.directory)} ({', '.join(rep.files)}); import them with `adlens import-traces "
          f"{term(rep.directory)}`")
    return 0


def cmd_parity(args: argparse.Namespace, settings: Settings) -> int:
    from core.cli.parity_output import print_parity
    from core.funnel.engine import open_engine
    from core.traces.parity import require_traces, run_parity

    db = make_engine(settings.db_url)
    try:
        require_traces(db)  # before the costly engine build
        engine = open_engine(settings, args.version)
        rep = run_parity(settings, db, engine, n_requests=args.requests, seed=args.seed,
                         progress=cli_progress(not args.json))
    finally:
        db.dispose()
    if args.json:
        print_json(rep)
    else:
        print_parity(rep)
    return 0
