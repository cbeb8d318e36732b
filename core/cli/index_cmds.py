"""`adlens embed`, `adlens build-index`, `adlens versions`, `adlens bench`."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.cli.output import add_json_flag, add_text_backend, positive_int, print_json
from core.common.escape import term
from core.common.progress import cli_progress
from core.store.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    _register_embed(sub)
    _register_build_index(sub)
    _register_versions(sub)
    _register_bench(sub)


def _register_embed(sub: argparse._SubParsersAction) -> None:
    """`adlens embed`."""
    p = sub.add_parser("embed", help="embed the catalog's ad texts (only new or changed ads are encoded)")
    p.add_argument("--model", help="sentence-transformers model name or folder (env ADLENS_MODEL; default: packaged all-MiniLM-L6-v2)")
    add_text_backend(p)
    p.add_argument("--ray", action="store_true",
                   help="encode on a Ray Data actor pool (cluster from ADLENS_RAY_ADDRESS, default auto); "
                        "results go into the same cache, so an interrupted run resumes")
    p.add_argument("--actors", type=int, default=2, help="with --ray: encoder actors (default 2)")
    add_json_flag(p)
    p.set_defaults(func=cmd_embed)


def _register_build_index(sub: argparse._SubParsersAction) -> None:
    """`adlens build-index`: the index, the query side and your own model."""
    p = sub.add_parser("build-index", help="build an immutable index version from the current catalog")
    p.add_argument("--name", required=True, help="version name (a-z 0-9 . _ -)")
    p.add_argument("--factory", default="Flat",
                   help='FAISS factory string: "Flat", "IVF256,Flat", "HNSW32", "IVF256,PQ32,RFlat" (default Flat)')
    p.add_argument("--nprobe", type=positive_int, help="IVF lists probed per query (default: tuned for recall@500 >= 0.95)")
    p.add_argument("--ef-search", type=positive_int, dest="ef_search", help="HNSW efSearch (default: tuned)")
    p.add_argument("--k-factor", type=positive_int, dest="k_factor", help="refined PQ: candidates re-ranked = k * k_factor")
    p.add_argument("--tower", help="trained user tower to use as query encoder (default: history mean)")
    p.add_argument("--parent", help="version this one derives from (recorded in the manifest)")
    p.add_argument("--no-sources", action="store_true", dest="no_sources",
                   help="build the two_tower source only (skip co_engagement, popular_in_context, targeting, ease)")
    p.add_argument("--ease-max-ads", type=positive_int, dest="ease_max_ads", metavar="N",
                   help="build the ease source (dense EASE weights, n_ads² x 2 bytes) for catalogs up to N ads "
                        "(default 5,000; at most 12,000)")
    p.add_argument("--learn-quotas", action="store_true", dest="learn_quotas",
                   help="learn each candidate source's quota on the validation slice of the tower's user split "
                        "(a --split user tower; its settings are retrained once on the slice's fitting side to weigh "
                        "two_tower) and record them in the manifest: the funnel uses them for this version unless "
                        "--quota is given, and `adlens evaluate --protocol user --version V` merges at them")
    g = p.add_argument_group("your own model (data/README.md, 'Your own model')")
    g.add_argument("--ad-vectors", dest="ad_vectors", metavar="NAME",
                   help="imported ad vectors (`adlens import-vectors ads`) instead of AdLens's text embeddings")
    g.add_argument("--query-encoder", dest="query_encoder", metavar="MODEL.onnx|PLUGIN",
                   help="an ONNX user tower (with --signature) or a plugin from entry-point group adlens.query_encoders")
    g.add_argument("--signature", type=Path, help="JSON mapping AdLens request features to the ONNX model's inputs")
    g.add_argument("--encoder-config", type=Path, dest="encoder_config", help="JSON config for a plugin encoder")
    g.add_argument("--request-vectors", dest="request_vectors", metavar="NAME",
                   help="imported request vectors (`adlens import-vectors requests`) as the query side")
    g.add_argument("--allow-partial", action="store_true", dest="allow_partial",
                   help="build on the ads both the catalog and the imported vectors have")
    p.add_argument("--funnel", metavar="FILE|builtin",
                   help="funnel definition (TOML: your own eligibility rules and reason codes; data/README.md, "
                        "'Your own funnel'), checked now and recorded in the version; default: the workspace's "
                        "funnel.toml when it has one, else the built-in rules ('builtin' forces those)")
    g.add_argument("--ranker", metavar="MODEL.onnx|PLUGIN",
                   help="your own early ranker instead of AdLens's pCTR model: an ONNX model (with --ranker-signature) "
                        "or a plugin from entry-point group adlens.rankers; checked on logged requests now and "
                        "recorded in the version (default: a funnel definition's [ranker] table, if any)")
    g.add_argument("--ranker-signature", type=Path, dest="ranker_signature", metavar="SIG.json",
                   help="JSON mapping candidate features to the ranker's inputs and declaring its output "
                        "(data/README.md, 'Your own early ranker')")
    p.add_argument("--no-map", action="store_true", dest="no_map",
                   help="skip the UMAP map (build it later with `adlens map --version V`)")
    p.add_argument("--model", help="embedding model (as for `adlens embed`)")
    add_text_backend(p)
    p.add_argument("--seed", type=int, default=0, help="k-means and request-sampling seed")
    p.add_argument("--shards", type=int, default=1,
                   help="split the index into N shards sharing one trained quantizer (default 1: unsharded)")
    add_json_flag(p)
    p.set_defaults(func=cmd_build_index)


def _register_versions(sub: argparse._SubParsersAction) -> None:
    """`adlens versions`."""
    p = sub.add_parser("versions", help="list index versions (or delete one)")
    p.add_argument("--delete", metavar="V", help="remove version V (folder and registry row)")
    add_json_flag(p)
    p.set_defaults(func=cmd_versions)


def _register_bench(sub: argparse._SubParsersAction) -> None:
    """`adlens bench`."""
    p = sub.add_parser("bench", help="benchmark embedding and ANN indexes on this machine")
    p.add_argument("--ads", type=positive_int, default=100_000, help="synthetic catalog size (default 100000)")
    p.add_argument("--queries", type=positive_int, help="queries per measurement (default 200; fewer at 1M)")
    p.add_argument("--types", nargs="+", choices=("flat", "ivf", "hnsw", "ivfpq"),
                   help="index families (default: all; hnsw skipped above 300k ads unless named)")
    p.add_argument("--no-embed", action="store_true", help="skip the embedding-throughput section")
    p.add_argument("--sections", nargs="+", metavar="SECTION",
                   help="run only these report sections: machine, embedding, ann, funnel, dashboard, shards, "
                        "traces, parity (shards, traces and parity run only when named)")
    p.add_argument("--threads", type=positive_int,
                   help="FAISS/OpenMP threads for this run (default: untouched, all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shards", type=positive_int,
                   help="also measure an S-shard index side by side with the unsharded one (section shards)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="with --shards: serve the shards in-process (local) or from Ray actors (ray)")
    p.add_argument("--nlist", type=positive_int, help="with --shards: IVF list count (default ~4*sqrt(ads))")
    p.add_argument("--factories", nargs="+", metavar="FACTORY",
                   help='with --shards: FAISS factory strings (default IVF{nlist},Flat and IVF{nlist},PQ48,Refine(SQ8))')
    p.add_argument("--sessions", type=int, default=1,
                   help="dashboard section: N concurrent browser sessions loading Inspect, Compare and Map "
                        "(median/p95 page time, server RSS) instead of the single-session user switch")
    p.add_argument("--dashboard-workspace", metavar="DIR",
                   help="dashboard section: serve this workspace (e.g. an `adlens demo` one) instead of "
                        "the generated bench workspace")
    p.add_argument("--dashboard-page", choices=("inspect", "map", "first-view"), default="inspect",
                   help="dashboard section: after every page's first view from a cold server, time user switches "
                        "on Inspect (at min(--ads, 100k) ads) or on the Embedding map (at --ads, aggregated on the "
                        "server above 50k); first-view: the first views only")
    p.add_argument("--trace-rows", type=positive_int, default=10_000_000,
                   help="traces section: logged candidate rows to generate and import (requests: rows/100)")
    p.add_argument("--demo-ads", type=positive_int, default=10_000,
                   help="demo section: `adlens demo --serve` at this many ads (default 10000)")
    p.add_argument("--demo-users", type=positive_int, default=5_000, help="demo section: users (default 5000)")
    add_json_flag(p)
    p.set_defaults(func=cmd_bench)


def cmd_embed(args: argparse.Namespace, settings: Settings) -> int:
    from core.store.catalog import load_catalog
    from core.store.db import make_engine
    from core.text.embedding_cache import embed_catalog

    catalog = load_catalog(make_engine(settings.db_url), with_impressions=False)
    if args.ray:
        from core.text.ray_embed import embed_catalog_ray

        res = embed_catalog_ray(settings, catalog, concurrency=args.actors, progress=cli_progress(not args.json))
    else:
        res = embed_catalog(settings, catalog, progress=cli_progress(not args.json))
    report = {"model": res.model, "fingerprint": res.fingerprint, "n_ads": len(res.ad_ids),
              "n_encoded": res.n_encoded, "n_reused": res.n_reused,
              "n_texts_encoded": res.n_texts_encoded, "dim": int(res.vectors.shape[1]),
              "seconds": round(res.seconds, 3)}
    if args.json:
        print_json(report)
    else:
        print(f"embedded {report['n_ads']:,} ads with {term(res.model)} ({res.fingerprint[:12]}): "
              f"{res.n_encoded:,} encoded, {res.n_reused:,} reused from cache in {res.seconds:.1f}s")
    return 0


def _source_params(args: argparse.Namespace) -> dict:
    return {"ease": {"max_ads": args.ease_max_ads}} if args.ease_max_ads is not None else {}


def print_quotas(q: dict) -> None:
    """One line: a version's learned quotas, their validation scores and the funnel quotas."""
    val = q.get("validation") or {}

    def f(x) -> str:
        return "-" if x is None else f"{x:.3f}"

    print(f"  learned quotas ({q['metric']} on the validation slice, {val.get('n_pairs', 0):,} pairs): "
          + ", ".join(f"{n} {share:.0%}" for n, share in q["shares"].items()) + f" -> {f(val.get(q['metric']))} "
          f"(default quotas {f(val.get('default_quotas'))}; alone: "
          + ", ".join(f"{n} {f(v)}" for n, v in (val.get("alone") or {}).items()) + "); funnel quotas "
          + ", ".join(f"{n} {c}" if c else f"{n} off" for n, c in q["counts"].items()) + ", two_tower K")


def _quotas_builder(args: argparse.Namespace, settings: Settings):
    """The --learn-quotas build hook, checked before anything is built."""
    from core.analysis.quota_learning import check_learnable, quotas_builder
    from core.common.errors import AdLensError
    from core.tower.registry import read_tower_metrics

    from core.tower.registry import tower_path

    if args.no_sources:
        raise AdLensError("--learn-quotas learns the candidate sources' quotas: drop --no-sources")
    if args.tower and not tower_path(settings, args.tower).is_dir():
        raise AdLensError(f"no tower named {args.tower!r} in this workspace (list them with `adlens versions` "
                          "or train one: `adlens train --name NAME --split user`)")
    training = read_tower_metrics(settings, args.tower)["training"] if args.tower else None
    check_learnable(training, args.tower)
    return quotas_builder(training)


def cmd_build_index(args: argparse.Namespace, settings: Settings) -> int:
    from core.funnel.definition import definition_for_build, funnel_builder
    from core.funnel.ranker_build import ranker_builder, ranker_choice
    from core.sources.base import SOURCE_ORDER
    from core.index.versions import build_version
    from core.sources.registry import sources_builder
    from core.vectors.query_side import QuerySpec, read_encoder_config

    funnel = definition_for_build(settings, args.funnel)  # a bad definition fails before anything is built
    choice = ranker_choice(args.ranker, args.ranker_signature, funnel.ranker if funnel else None,
                           funnel.folder if funnel else None, funnel.name if funnel else "funnel.toml")
    ranker = () if choice is None else (  # opened and its features checked now: a bad ranker fails here too
        ranker_builder(choice, settings, ("two_tower",) if args.no_sources else SOURCE_ORDER),)

    params = {k: v for k, v in (("nprobe", args.nprobe), ("efSearch", args.ef_search),
                                ("k_factor", args.k_factor)) if v is not None}
    query = QuerySpec(args.query_encoder, args.signature, args.request_vectors, read_encoder_config(args.encoder_config))
    builders = () if args.no_sources else (sources_builder(_source_params(args)),)
    if args.learn_quotas:
        builders += (_quotas_builder(args, settings),)
    v = build_version(settings, args.name, args.factory, tower=args.tower, search_params=params or None,
                      parent=args.parent, seed=args.seed, progress=cli_progress(not args.json), with_map=not args.no_map,
                      ad_vectors=args.ad_vectors, query=query, allow_partial=args.allow_partial,
                      shards=args.shards,
                      extra_builders=builders + (() if funnel is None else (funnel_builder(funnel),)) + ranker)
    m = v.manifest
    if args.json:
        print_json(m)
    else:
        r = m.recall
        print(f"built version {term(v.name)} at {term(v.path)}\n  {term(m.factory)} ({m.metric}) over {m.n_ads:,} ads, dim "
              f"{m.dims['index']}, search params {m.search_params} ({m.search_params_source})\n"
              f"  recall@10 {r['recall@10']:.3f}  @100 {r['recall@100']:.3f}  @500 {r['recall@500']:.3f} "
              f"vs exact on {m.recall_queries['n']} {m.recall_queries['source']}\n"
              f"  {m.bytes_per_ad:.0f} bytes/ad, built in {m.total_build_s:.1f}s"
              + (f"\n  {m['shards']['n']} shards: " + ", ".join(f"{e['count']:,} ads / {e['bytes'] / 2**20:.1f} MiB"
                                                            for e in m["shards"]["entries"]) if m.get("shards") else ""))
        for name, src in ((m.get("sources") or {}).get("built") or {}).items():
            print(f"  source {name}: can return {src['stats']['reachable_ads']:,} ads, params {src['params']}")
        if f := m.get("funnel"):
            print(f"  funnel {term(f['source'])} (sha256 {f['sha256'][:12]}…): {len(f['eligibility'])} eligibility rules"
                  + (f", {len(f['ranking'])} ranking rules" if f["ranking"] else "")
                  + (f"; own codes {', '.join(map(term, f['custom']))}" if f["custom"] else "")
                  + (f"; quotas {', '.join(f'{n} {c}' for n, c in f['quotas'].items())}" if f.get("quotas") else ""))
        if r := m.get("ranker"):
            smp = r["sample"]
            print(f"  early ranker {term(r['describe'])}: {r['output']} from {len(r['features'])} features "
                  f"(fingerprint {r['fingerprint'][:12]}…); on {smp['n_candidates']:,} candidates of "
                  f"{smp['n_requests']} logged requests its output ranged {smp['min']:.4g}..{smp['max']:.4g}")
        if m.quotas:
            print_quotas(m.quotas)
    return 0


def cmd_versions(args: argparse.Namespace, settings: Settings) -> int:
    from core.index.versions import delete_version, list_versions

    if args.delete:
        delete_version(settings, args.delete)
        if args.json:
            print_json({"deleted": args.delete})
        else:
            print(f"deleted version {term(args.delete)}")
        return 0
    rows = list_versions(settings)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no versions yet: `adlens build-index --name V --factory Flat`")
        return 0
    fmt = "{:<18} {:<20} {:>9} {:>5} {:>7} {:>7} {:>7} {:>9}  {:<19} {}"
    print(fmt.format("name", "factory", "ads", "dim", "r@10", "r@100", "r@500", "bytes/ad", "created", "status"))
    for r in rows:
        rec = [f"{r[k]:.3f}" if r[k] is not None else "-" for k in ("recall@10", "recall@100", "recall@500")]
        print(fmt.format(term(r["name"]), term(r["factory"] or "-"), f"{r['n_ads'] or 0:,}", r["dim"] or "-", *rec,
                         f"{r['bytes_per_ad'] or 0:.0f}", term(r["created_at"] or "-"), term(r["status"])))
    return 0


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from core.bench.runner import format_report, run_bench

    report = run_bench(settings, ads=args.ads, queries=args.queries, types=args.types,
                       embed=not args.no_embed, sections=args.sections, seed=args.seed,
                       threads=args.threads, log=not args.json, shards=args.shards, backend=args.backend,
                       nlist=args.nlist, factories=args.factories, sessions=args.sessions,
                       dashboard_workspace=args.dashboard_workspace, dashboard_page=args.dashboard_page,
                       trace_rows=args.trace_rows, demo_ads=args.demo_ads, demo_users=args.demo_users)
    if args.json:
        print_json(report)
    else:
        print(format_report(report))
    return 0
