"""`adlens inspect`, `adlens why-not`, `adlens audience`: one request's funnel, one ad's fate,
one ad's audience. Handlers build a FunnelEngine, call core and print what it returns."""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from core.cli.output import (
    add_backend_flag,
    add_json_flag,
    fraction,
    positive_int,
    print_json,
)
from core.common.escape import term
from core.funnel.params import DEFAULT_PARAMS
from core.funnel.reasons import BUILTIN_REASONS, Reason
from core.funnel.rule_list import rules_off_note
from core.funnel.trace import describe_query_source, ranker_text
from core.store.settings import Settings


def _add_context(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("context (default: the user's usual context; override for what-if)")
    g.add_argument("--community", help="community id, or 'none' for the home feed")
    g.add_argument("--placement", help="home_feed, community_feed or conversation")
    g.add_argument("--device", help="ios, android, desktop, mobile_web or unknown")
    g.add_argument("--country", help="country code, e.g. US")
    g.add_argument("--time", help="request time, ISO 8601 UTC (default: the latest logged impression)")


def _add_params(p: argparse.ArgumentParser) -> None:
    d = DEFAULT_PARAMS
    g = p.add_argument_group("funnel parameters")
    g.add_argument("--k", type=positive_int, default=d.k, help=f"candidates retrieved (default {d.k})")
    g.add_argument("--n", type=positive_int, default=d.n_ranked, help=f"kept by early ranking (default {d.n_ranked})")
    g.add_argument("--m", type=positive_int, default=d.max_per_advertiser,
                   help=f"max slate ads per advertiser (default {d.max_per_advertiser})")
    g.add_argument("--slate", type=positive_int, default=d.slate_size, help=f"slate size (default {d.slate_size})")
    g.add_argument("--mmr", type=fraction, default=d.mmr_lambda, help="MMR lambda in [0, 1] (default off)")
    g.add_argument("--nprobe", type=positive_int, default=None,
                   help="IVF nprobe for this request (default: the version's)")
    g.add_argument("--ef-search", type=positive_int, default=None, help="HNSW efSearch for this request")
    g.add_argument("--disable-rule", "--disable", action="append", default=[], dest="disable", metavar="CODE",
                   help="switch off any rule of the version's funnel (repeatable): built-in, expression, plugin, "
                        "eligibility or ranking stage, e.g. FREQUENCY_CAP; an unknown code lists the version's rules")
    g.add_argument("--no-source", action="append", default=[], dest="no_source", metavar="SOURCE",
                   help="switch off a candidate source (repeatable): two_tower, co_engagement, "
                        "popular_in_context, targeting")
    g.add_argument("--quota", action="append", default=[], metavar="SOURCE=N",
                   help="candidates a source contributes (repeatable), e.g. co_engagement=300 "
                        "(defaults: co_engagement 200, popular_in_context 100, targeting 100; two_tower: --k)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="one request's funnel: counts, slate, filtered candidates by reason")
    p.add_argument("--version", required=True, help="index version name (`adlens versions` lists them)")
    p.add_argument("--user", required=True, help="user id")
    p.add_argument("--show", type=positive_int, default=5, help="ad ids shown per reason (default 5)")
    _add_context(p)
    _add_params(p)
    add_backend_flag(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("why-not", help="follow one ad through every stage of a user's request")
    p.add_argument("--version", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--ad", required=True, help="ad id")
    _add_context(p)
    _add_params(p)
    add_backend_flag(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_why_not)

    p = sub.add_parser("audience", help="who can see this ad? retrieval/eligibility over sampled users")
    p.add_argument("--version", required=True)
    p.add_argument("--ad", required=True)
    p.add_argument("--users", type=positive_int, default=200, help="users sampled (default 200)")
    p.add_argument("--seed", type=int, default=0)
    _add_params(p)
    add_backend_flag(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_audience)


def _engine(settings: Settings, version: str):
    from core.funnel.engine import open_engine

    return open_engine(settings, version)


def _params(args: argparse.Namespace, engine=None):
    """The request's FunnelParams; with `engine`, fitted to its catalog (a notice on stderr)."""
    from core.funnel.params import FunnelParams

    sp = {}
    if args.nprobe is not None:
        sp["nprobe"] = args.nprobe
    if args.ef_search is not None:
        sp["efSearch"] = args.ef_search
    params = FunnelParams(k=args.k, n_ranked=args.n, max_per_advertiser=args.m, slate_size=args.slate,
                          disabled_rules=tuple(args.disable), mmr_lambda=args.mmr, search_params=sp or None,
                          quotas=_quotas(args.quota) or None, disabled_sources=tuple(args.no_source))
    if engine is None:
        return params
    params, notices = params.fit_to_catalog(engine.n_ads)
    for note in notices:
        print(f"note: {note}", file=sys.stderr)
    return params


def _engine_and_params(settings: Settings, args: argparse.Namespace):
    """The version's funnel engine and the request's FunnelParams fitted to its catalog; bad
    flags fail before the version loads."""
    _params(args)
    engine = _engine(settings, args.version)
    return engine, _params(args, engine)


def _quotas(items: list[str]) -> dict[str, int]:
    from core.common.errors import AdLensError

    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = int(value)
        except ValueError:
            sep = ""
        if not sep:
            raise AdLensError(f"--quota {item!r}: expected SOURCE=N, e.g. co_engagement=300")
    return out


def _request(engine, args: argparse.Namespace):
    return engine.default_request(args.user, community_id=args.community, placement=args.placement,
                                  device=args.device, country=args.country, ts=args.time)


def _describe_request(r) -> str:
    where = f"community {r.community_id} ({r.placement})" if r.community_id else r.placement
    return term(f"user {r.user_id} · {where} · {r.device} · {r.country} · {r.ts.isoformat(sep=' ')}")


def cmd_inspect(args: argparse.Namespace, settings: Settings) -> int:
    engine, params = _engine_and_params(settings, args)
    trace = engine.run(_request(engine, args), params)
    if args.json:
        print_json(trace.to_dict())
        return 0
    print(f"version {term(trace.version_name)} · {_describe_request(trace.request)}")
    if trace.params.disabled_rules:
        print(rules_off_note(trace.params.disabled_rules))
    print("funnel: " + " → ".join(f"{k} {v:,}" for k, v in trace.stage_counts.items()))
    if describe_query_source(trace.query_source):
        print(describe_query_source(trace.query_source))
    print("timings (ms): " + "  ".join(f"{k} {v:.1f}" for k, v in trace.stage_timings_ms.items()))
    print("\nsources (off: " + (", ".join(trace.params.disabled_sources) or "none") + "):")
    print(f"  {'source':<20} {'quota':>6} {'found':>6} {'eligible':>8} {'ranked':>6} {'slate':>5} {'only it':>7}")
    for name, n in trace.source_counts().items():
        print(f"  {name:<20} {trace.params.quota(name):>6} {n['retrieved']:>6} {n['eligible']:>8} {n['ranked']:>6} "
              f"{n['slate']:>5} {n['only_this_source']:>7}")
    own = trace.ranker.get("kind") not in (None, "adlens")
    if own:
        rk = trace.ranker
        print(f"early ranker: {term(rk['describe'])} ({rk['kind']}, output {rk['output']}, fingerprint "
              f"{rk['fingerprint'][:12]}…) on " + ", ".join(map(term, rk["features"])))
    else:
        cal = trace.calibration
        print(f"pCTR model ({cal.get('method')}, {cal.get('n', 0):,} logged impressions): "
              + "  ".join(f"{k} {v:+.3f}" for k, v in cal.get("coefficients", {}).items())
              + f"  intercept {cal.get('intercept', 0):+.3f}")
    slate = trace.slate
    print(f"\nslate ({len(slate)}):")
    print(f"  {'#':>2}  {'ad_id':<16} {'advertiser':<20} {'score':>7} {'pCTR':>7} {'eCPM':>9}  {'sources (rank)':<34} title")
    for r, (_, row) in zip(slate.itertuples(), slate.iterrows()):
        adv = "-" if pd.isna(r.advertiser_name) else str(r.advertiser_name)
        found = ", ".join(f"{s} {int(row[f'rank_{s}'])}" for s in r.sources)
        print(f"  {int(r.final_position):>2}  {term(r.ad_id):<16} {term(adv[:20]):<20} "
              f"{r.score:7.3f} {r.pctr:7.4f} {r.ecpm:9.3f}  {found[:34]:<34} {term(str(r.title)[:60])}")
        if own:
            print("      " + term(ranker_text(trace.ranker, r.pctr, r.ecpm, row["ranker_score"], row["ranker_inputs"])))
    c = trace.candidates
    dropped = c[c["outcome"] != "slate"]
    print(f"\nnot shown, by primary reason ({len(dropped)}):")
    codes = dropped["primary_reason"].dropna().unique()
    own = {r.code: r for r in engine.rule_infos if r.code not in BUILTIN_REASONS}  # a definition's own codes
    for reason in sorted(codes, key=_reason_order(trace)):  # pipeline order; a definition's own codes too
        grp = dropped[dropped["primary_reason"] == reason]
        ids = ", ".join(map(term, grp["ad_id"].head(args.show)))
        more = f", … +{len(grp) - args.show}" if len(grp) > args.show else ""
        rule = own.get(str(reason))
        desc = f": {term(rule.description)}" if rule and rule.description else ""
        what = f"  [{rule.kind}, {rule.stage}{desc}]" if rule else ""
        print(f"  {term(reason):<24} {len(grp):>5}  {ids}{more}{what}")
    return 0


def _reason_order(trace):
    """Sort key: the Trace's rule order, then the post-eligibility codes, then anything else."""
    order = [*(trace.params.rule_order or ()), Reason.BELOW_CUTOFF.value, Reason.ADVERTISER_CAP.value]
    rank = {c: i for i, c in enumerate(order)}
    return lambda code: (rank.get(str(code), len(rank)), str(code))


def cmd_why_not(args: argparse.Namespace, settings: Settings) -> int:
    from core.funnel.explain import why_not

    engine, params = _engine_and_params(settings, args)
    w = why_not(engine, _request(engine, args), args.ad, params)
    if args.json:
        print_json(w.to_dict())
        return 0
    print(f"ad {term(w.ad_id)} · version {term(w.version_name)} · {_describe_request(w.request)}")
    if params.disabled_rules:
        print(rules_off_note(params.disabled_rules))
    print(f"verdict: {term(w.summary)}\n")
    marks = {True: "pass", False: "FAIL", None: "  - "}
    for s in w.stages:
        print(f"  [{marks[s.passed]}] {s.stage:<10} {term(s.detail)}")
    print("\ncandidate sources:")
    for s in w.sources:
        print(f"  [{'found' if s['found'] else '  -  '}] {term(s['reason'])}")
    if w.eligibility:
        print("\neligibility rules:")
        for r in w.eligibility:
            state = "off " if not r["enabled"] else ("FAIL" if r["failed"] else "ok  ")
            print(f"  {state} {r['code']:<24} {term(r['detail'])}")
    return 0


def cmd_audience(args: argparse.Namespace, settings: Settings) -> int:
    from core.funnel.audience import audience

    engine, params = _engine_and_params(settings, args)
    rep = audience(engine, args.ad, n_users=args.users, seed=args.seed, params=params)
    if args.json:
        print_json(rep.to_dict())
        return 0
    n = max(rep.n_users, 1)
    print(f"ad {term(rep.ad_id)} · version {term(rep.version_name)} · {rep.n_users} sampled users in their usual context")
    print(f"  retrieved      {rep.retrieved:>5} ({rep.retrieved / n:.0%})  ANN rank "
          + ("  ".join(f"{k} {v:.0f}" for k, v in rep.rank_quantiles.items()) or "-"))
    print(f"  eligible       {rep.eligible:>5} ({rep.eligible / n:.0%})")
    print(f"  retrieved+elig {rep.retrieved_and_eligible:>5} ({rep.retrieved_and_eligible / n:.0%})")
    print(f"  in slate       {rep.in_slate:>5} ({rep.in_slate / n:.0%})")
    if rep.primary_reason_counts:
        print("blocking eligibility rules (first failing / any):")
        for code, cnt in rep.failed_reason_counts.items():
            print(f"  {code:<24} {rep.primary_reason_counts.get(code, 0):>5} / {cnt:>5}")
    print("first stage not passed: " + ", ".join(f"{k} {v}" for k, v in rep.blocking_stage_counts.items()))
    print("reached through sources (users retrieved / in slate / only this source):")
    for name, c in rep.source_counts.items():
        print(f"  {name:<20} {c['retrieved']:>5} / {c['slate']:>5} / {c['only_this_source']:>5}")
    return 0
