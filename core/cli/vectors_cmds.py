"""`adlens import-vectors ads|requests FILE --name N`: bring your own ad or request vectors."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.cli.output import add_json_flag, print_json
from core.store.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-vectors", help="import your own ad vectors or precomputed request vectors "
                                              "(format: data/README.md, 'Your own model')")
    kinds = p.add_subparsers(dest="vectors_kind", metavar="KIND", required=True)
    a = kinds.add_parser("ads", help="ad vectors: Parquet (ad_id, vector) or .npy with --ids")
    a.add_argument("file", type=Path)
    a.add_argument("--name", required=True, help="name of the imported set (a-z 0-9 . _ -)")
    a.add_argument("--metric", default="ip", help="similarity the vectors were trained for: ip, cosine or l2 (default ip)")
    a.add_argument("--ids", type=Path, help="for .npy: ad ids in row order (.txt one per line, .npy, or a "
                                            "Parquet/CSV with ad_id)")
    a.add_argument("--allow-partial", action="store_true", dest="allow_partial",
                   help="accept ids unknown to the catalog and catalog ads without a vector (versions use the ads in both)")
    add_json_flag(a)
    a.set_defaults(func=cmd_import_ads)
    r = kinds.add_parser("requests", help="request vectors: Parquet (user_id, vector[, community_id, placement, device, ts])")
    r.add_argument("file", type=Path)
    r.add_argument("--name", required=True, help="name of the imported set (a-z 0-9 . _ -)")
    add_json_flag(r)
    r.set_defaults(func=cmd_import_requests)
    ls = kinds.add_parser("list", help="list imported vector sets")
    add_json_flag(ls)
    ls.set_defaults(func=cmd_list)


def _report(m: dict, args: argparse.Namespace) -> int:
    if args.json:
        print_json(m)
        return 0
    if m.get("unchanged"):
        print(f"{m['kind']} vectors {m['name']!r} already hold this file (sha256 {m['source']['sha256'][:12]}…): nothing to do")
        return 0
    print(f"imported {m['n']:,} {m['kind']} vectors of dimension {m['dim']} as {m['name']!r} "
          f"(sha256 {m['source']['sha256'][:12]}…{', metric ' + m['metric'] if m.get('metric') else ''})")
    cov = m.get("coverage")
    if cov and (cov["unknown_ids"] or cov["catalog_ads_without_vector"]):
        print(f"  partial: {cov['n_common']:,} ads in both; {cov['unknown_ids']:,} ids unknown to the catalog, "
              f"{cov['catalog_ads_without_vector']:,} catalog ads without a vector")
    rep = m.get("report")
    if rep:
        print(f"  {rep['users']:,} users; skipped {rep['skipped_no_user']} row(s) without user_id, "
              f"{rep['skipped_no_vector']} without a vector")
    return 0


def cmd_import_ads(args: argparse.Namespace, settings: Settings) -> int:
    from core.vectors.ad_vectors import import_ad_vectors

    return _report(import_ad_vectors(settings, args.file, args.name, metric=args.metric, ids_path=args.ids,
                                     allow_partial=args.allow_partial), args)


def cmd_import_requests(args: argparse.Namespace, settings: Settings) -> int:
    from core.vectors.request_vectors import import_request_vectors

    return _report(import_request_vectors(settings, args.file, args.name), args)


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from core.vectors.store import list_sets

    rows = list_sets(settings)
    if args.json:
        print_json(rows)
    for r in [] if args.json else rows:
        print(f"{r['name']:<20} {r['kind']:<9} dim {r['dim']:<5} n {r['n']:<9,} metric {r['metric'] or '-':<7} "
              f"sha256 {r['source_sha256']}… {r['created_at']}")
    return 0
