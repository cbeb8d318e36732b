"""`adlens compare`, `adlens health`, `adlens map`: version analytics (core.analysis.compare, core.analysis.health,
core.index.maps). Handlers call core and print what it returns."""

from __future__ import annotations

import argparse

import pandas as pd

from core.cli.output import (
    add_backend_flag,
    add_json_flag,
    positive_int,
    print_json,
    text_frame,
)
from core.common.escape import term
from core.funnel.params import DEFAULT_PARAMS
from core.store.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="run the same requests through versions A and B and compare")
    p.add_argument("a", help="version A (the baseline)")
    p.add_argument("b", help="version B (the candidate)")
    p.add_argument("--users", type=positive_int, default=100, help="users sampled, in their usual contexts (default 100)")
    p.add_argument("--user", action="append", default=None, metavar="ID", help="compare these users instead (repeatable)")
    p.add_argument("--k", type=positive_int, default=DEFAULT_PARAMS.k, help=f"candidates retrieved (default {DEFAULT_PARAMS.k})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top", type=positive_int, default=10, help="most-changed requests shown (default 10)")
    add_backend_flag(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("health", help="recall-vs-nprobe/efSearch curve, IVF balance, dead and hub ads")
    p.add_argument("--version", required=True)
    p.add_argument("--requests", type=positive_int, default=200, help="sampled real requests (default 200)")
    p.add_argument("--k", type=positive_int, default=100, help="recall@k (default 100)")
    p.add_argument("--seed", type=int, default=0)
    add_backend_flag(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_health)

    p = sub.add_parser("map", help="compute the UMAP map of an existing version (built versions have one)")
    p.add_argument("--version", required=True)
    add_json_flag(p)
    p.set_defaults(func=cmd_map)


def _fmt(x, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and pd.isna(x)) else f"{x:.{digits}f}"


def cmd_compare(args: argparse.Namespace, settings: Settings) -> int:
    from core.analysis.compare import compare_versions
    from core.funnel.engine import FunnelEngine
    from core.funnel.params import FunnelParams
    from core.index.versions import load_version
    from core.store.catalog import load_catalog
    from core.store.db import make_engine

    catalog = load_catalog(make_engine(settings.db_url))
    ea = FunnelEngine(load_version(settings, args.a), catalog)
    eb = FunnelEngine(load_version(settings, args.b), catalog)
    rep = compare_versions(ea, eb, users=args.user, n_users=args.users, seed=args.seed, params=FunnelParams(k=args.k))
    if args.json:
        print_json(rep.to_dict())
        return 0
    s = rep.summary
    print(f"compare A={term(rep.version_a)}  B={term(rep.version_b)}  ({len(rep.per_request)} requests, K={rep.k}, seed {rep.seed})")
    diff = rep.differences
    if diff.get("changed"):
        print("the versions differ in: " + ", ".join(diff["changed"]))
    rk = diff.get("early_ranker") or {}
    if rk:
        print("early ranker: " + "  ·  ".join(
            f"{lab.upper()} {term(r.get('describe', '?'))}" + (f" (fingerprint {r['fingerprint'][:12]}…)"
                                                                if r.get("fingerprint") else "")
            for lab, r in rk.items()))
    print("\nper request (mean / p10 / p50 / p90)")
    for key in ("overlap", "jaccard", "rbo", "slate_overlap", "n_gained", "n_lost", "mean_abs_rank_shift"):
        d = s.get(key) or {}
        print(f"  {key:<20} {_fmt(d.get('mean'))}  {_fmt(d.get('p10'))}  {_fmt(d.get('p50'))}  {_fmt(d.get('p90'))}")
    print(f"  identical slates     {s['identical_slates']} of {len(rep.per_request)}")
    print(f"\n{'':<34}{'A':>12}{'B':>12}")
    rows = [
        (f"recall@{rep.k} vs own exact search", rep.recall_vs_exact["a"], rep.recall_vs_exact["b"]),
        (f"recall@{rep.k} of held-out clicks", rep.recall_vs_clicks["a"].get(f"recall@{rep.k}"),
         rep.recall_vs_clicks["b"].get(f"recall@{rep.k}")),
        ("slate coverage of eligible ads", rep.coverage["a"]["slate_coverage"], rep.coverage["b"]["slate_coverage"]),
        ("retrieved coverage", rep.coverage["a"]["retrieved_coverage"], rep.coverage["b"]["retrieved_coverage"]),
        ("Gini over ads (slates)", rep.concentration["a"]["gini_ads"], rep.concentration["b"]["gini_ads"]),
        ("Gini over advertisers", rep.concentration["a"]["gini_advertisers"], rep.concentration["b"]["gini_advertisers"]),
        ("latency p50 ms", rep.latency_ms["a"]["p50"], rep.latency_ms["b"]["p50"]),
        ("latency p99 ms", rep.latency_ms["a"]["p99"], rep.latency_ms["b"]["p99"]),
    ]
    for label, a, b in rows:
        print(f"  {label:<32}{_fmt(a):>12}{_fmt(b):>12}")
    print("\nfunnel stage counts (mean per request)")
    for r in rep.stage_counts.itertuples():
        print(f"  {r.stage:<32}{_fmt(r.mean_a, 1):>12}{_fmt(r.mean_b, 1):>12}")
    print(f"\nvertical mix shift (total variation {rep.vertical_tvd:.3f}); largest moves:")
    for r in rep.vertical_mix.head(8).itertuples():
        print(f"  {term(r.vertical):<24} {r.share_a:6.1%} → {r.share_b:6.1%}  ({r.delta:+.1%})")
    _print_sources(rep.sources)
    _print_funnels(rep.funnels, rep.rule_attribution)
    print(f"\nslate ads lost in B, by stage: {rep.lost_by_stage or 'none'}")
    cd = rep.catalog_diff
    print(f"catalog: {cd['only_in_a']} ads only in A, {cd['only_in_b']} only in B")
    print(f"\nmost changed requests (drill in: adlens inspect --version {term(rep.version_b)} --user U)")
    cols = ["user_id", "community_id", "rbo", "overlap", "slate_overlap", "n_gained", "n_lost"]
    top = rep.most_changed[cols].head(args.top).fillna({"community_id": "(home feed)"})
    print(text_frame(top).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def _print_funnels(funnels: dict, attribution: list[dict]) -> None:
    """The funnel definitions' difference and the share of slates each differing rule changed."""
    if not funnels or funnels.get("same"):
        return
    side = {k: f"{funnels[k]['source']}" + (f" (sha256 {funnels[k]['sha256'][:12]}…)" if funnels[k]["sha256"] else "")
            for k in ("a", "b")}
    print(f"\nfunnel definitions differ: A {term(side['a'])}, B {term(side['b'])}")
    for label, rows in (("added in B", funnels["added"]), ("removed in B", funnels["removed"])):
        for r in rows:
            what = r["expr"] or (f"plugin {r['plugin']}" if r["plugin"] else "built-in")
            print(f"  {label:<13} {r['code']:<24} {r['stage']:<12} {term(' '.join(str(what).split()))}")
    for r in funnels["changed"]:
        print(f"  {'changed':<13} {r['code']:<24} {term(r['what'])}")
    if funnels.get("reordered"):
        print("  the rules common to both run in a different order (the primary reason may move)")
    for r in attribution:
        if r["removed_requests"] or r["restored_requests"]:
            print(f"  {term(r['sentence'])} ({r['removed_requests']} / {r['restored_requests']} of {r['requests']} "
                  "requests lost / gained an ad)")
    quiet = [r["code"] for r in attribution if not (r["removed_requests"] or r["restored_requests"])]
    if quiet:
        print(f"  changed no compared slate: {', '.join(quiet)}")


def _print_sources(sources: dict) -> None:
    from core.analysis.sources import compare_sources_table

    print("\ncandidate sources: share of slate slots, slate slots only it found, recall of held-out clicks")
    print(compare_sources_table(sources).to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.3f}"))


def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    from core.analysis.health import health
    from core.funnel.engine import open_engine

    eng = open_engine(settings, args.version)
    rep = health(eng.version, eng.catalog, n_requests=args.requests, k=args.k, seed=args.seed, engine=eng)
    if args.json:
        print_json(rep.to_dict())
        return 0
    print(f"health of {term(rep.version)} ({rep.kind}), recall@{rep.k} vs exact on {rep.n_requests} sampled requests")
    if len(rep.curve):
        print(text_frame(rep.curve).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if rep.ivf_lists:
        L = rep.ivf_lists
        print(f"\nIVF lists: nlist {L['nlist']}, imbalance factor {L['imbalance_factor']:.2f}, "
              f"empty {L['empty_lists']}, sizes min/mean/max {L['min_size']}/{L['mean_size']:.1f}/{L['max_size']}")
        print("  largest: " + ", ".join(f"#{x['list']}={x['size']}" for x in L["largest"][:5]))
    if rep.shards:
        sh = rep.shards
        print(f"\nshards: {sh['n']} ({sh['backend']} backend), balance (largest/mean) {sh['balance']:.2f}")
        for r in sh["rows"]:
            lat = f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms" if r["p50_ms"] is not None else "-"
            print(f"  shard {r['shard']}: {r['ads']:,} ads, {r['bytes'] / 2**20:.1f} MiB, {lat}, "
                  f"{r['result_share']:.0%} of results")
    print(f"\ndead ads (never retrieved for any sampled request): {len(rep.dead_ads)}")
    if len(rep.dead_ads):
        print(text_frame(rep.dead_ads["reason"].value_counts()).to_string())
        print(text_frame(rep.dead_by_vertical.head(10)).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"\nhub ads (retrieved ≥ 10× the average share): {len(rep.hub_ads)}")
    if len(rep.hub_ads):
        print(text_frame(rep.hub_ads.head(10)).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if rep.sources:
        print("\ncandidate sources: coverage (ads it can ever return) and dead ads (returned for no sampled request)")
        for name, c in rep.sources.items():
            print(f"  {name:<20} can return {c['reachable_ads']:>7,} ({_fmt(c['reachable_share'], 2)})  "
                  f"returned {c['returned_ads']:>7,}  dead {c['dead_ads']:>7,} (of them reachable {c['dead_reachable_ads']:,})")
    if rep.rules:
        _print_rules(rep.rules)
    ev = rep.tower_metrics  # the evaluation report (core.index.manifest normalises its shape)
    if ev.get("models"):
        print(f"\n{tower_eval_header(ev)}:")
        print(text_frame(pd.DataFrame(ev["models"]).T).to_string(float_format=lambda v: f"{v:.3f}"))
    else:
        print("\nno learned tower: this version uses the history-mean query encoder")
    return 0


def _print_rules(rules: dict) -> None:
    print(f"\nfunnel rules on {rules['n_requests']} sampled users ({rules['candidates']:,} candidates): share of the "
          "candidates each sees that it fails / is the primary reason for")
    for r in rules["rules"]:
        shares = (f"{r['fail_share']:7.1%} {r['primary_share']:7.1%}" if r["enabled"] and r["evaluated"]
                  else f"{'off' if not r['enabled'] else '-':>7} {'':>7}")
        flag = f"  ! {r['flag']}" if r["flag"] else ""
        print(f"  {r['code']:<24} {r['stage']:<12} {r['kind']:<11} {shares}{flag}")


def tower_eval_header(ev: dict) -> str:
    """What the manifest's tower evaluation was measured on, per protocol, and where to see more."""
    if ev.get("protocol") == "user":
        return (f"tower evaluation on {ev.get('n_test_pairs', 0):,} held-out (user, ad) pairs of "
                f"{ev.get('n_users', 0):,} users, user protocol (from the manifest; `adlens evaluate --protocol user "
                "--version V` adds every candidate source)")
    return (f"tower evaluation on {ev.get('n_test_clicks', 0):,} held-out clicks (from the manifest; "
            "`adlens evaluate --tower T` has segments)")


def cmd_map(args: argparse.Namespace, settings: Settings) -> int:
    from core.index.versions import build_version_map

    meta = build_version_map(settings, args.version)
    if args.json:
        print_json(meta)
    else:
        t = meta.get("timings", {})
        print(f"map for {term(args.version)}: {meta.get('n_fit')} ads fitted with UMAP, {meta.get('n_placed')} placed, "
              f"{meta.get('n_users')} user points; {t.get('total_s', 0):.1f} s")
    return 0
