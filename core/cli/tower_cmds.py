"""`adlens train` and `adlens evaluate`: the learned user tower and its offline evaluation."""

from __future__ import annotations

import argparse
import sys

from core.cli.output import add_json_flag, positive_int, print_json
from core.common.escape import term
from core.common.progress import cli_progress
from core.store.settings import Settings
from core.tower.defaults import TRAIN_DEFAULTS
from core.tower.split import KINDS

SHOWN_MODELS = ("tower", "history_mean", "most_popular", "random")
USER_MODELS = ("tower", "ease", "item_knn", "history_mean", "most_popular", "random")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a user tower on the impression log, evaluate and register it")
    p.add_argument("--name", required=True, help="tower name (letters, digits, _ - .); towers are immutable")
    p.add_argument("--epochs", type=positive_int, default=TRAIN_DEFAULTS["epochs"],
                   help=f"passes over the training clicks (default {TRAIN_DEFAULTS['epochs']}; the defaults of --epochs, "
                        "--logq, --history-limit and --id-embeddings were chosen with --tune on a public dataset: "
                        "README, 'Offline evaluation on public data')")
    p.add_argument("--batch-size", type=positive_int, default=TRAIN_DEFAULTS["batch_size"])
    p.add_argument("--lr", type=float, default=TRAIN_DEFAULTS["lr"])
    p.add_argument("--temperature", type=float, default=TRAIN_DEFAULTS["temperature"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hard-negatives", action="store_true",
                   help="add each click's nearest shown-but-not-clicked impression as a negative")
    p.add_argument("--no-context", action="store_true", help="ignore community, placement, device and hour")
    p.add_argument("--no-adapter", action="store_true", help="keep the ad side as the frozen text vector")
    p.add_argument("--logq", type=float, default=TRAIN_DEFAULTS["logq"],
                   help="weight of the logQ popularity correction (0 = off, 1 = unbiased sampled softmax, 2 = "
                        f"over-corrected: popular ads scored up; default {TRAIN_DEFAULTS['logq']:g})")
    p.add_argument("--history-limit", type=int, default=TRAIN_DEFAULTS["history_limit"],
                   help="last clicks pooled into the history vector (0 = the whole click history; default "
                        f"{TRAIN_DEFAULTS['history_limit']})")
    p.add_argument("--hidden", type=int, default=TRAIN_DEFAULTS["hidden"], help="width of the tower's MLP")
    p.add_argument("--id-embeddings", action=argparse.BooleanOptionalAction, default=TRAIN_DEFAULTS["id_embeddings"],
                   help="learn a vector per ad clicked in training (ad side and pooled history); new ads keep text only "
                        f"(default {'on' if TRAIN_DEFAULTS['id_embeddings'] else 'off'}; --no-id-embeddings: text only)")
    p.add_argument("--split", "--holdout", dest="split", choices=KINDS, default="time",
                   help="held-out clicks: time (cutoff), random (impressions), user (random (user, ad) pairs, "
                        "evaluated with the user protocol) or none (train on every impression, no evaluation)")
    p.add_argument("--cutoff", help="time split cutoff (default: 80th percentile of impression times)")
    p.add_argument("--tune", action="store_true",
                   help="first choose --epochs, --logq, --history-limit and --id-embeddings on the validation split "
                        "of the training side (a small grid, then epochs with early stop; at most "
                        "14 trainings on 80%% of the training side), print what was tried, then train the chosen "
                        "settings on the whole training side (values given for those four are ignored)")
    add_json_flag(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="Recall/HitRate/NDCG@K of a tower vs baselines on held-out clicks")
    p.add_argument("--tower", help="the tower to evaluate (required by --protocol time; optional for user)")
    p.add_argument("--protocol", choices=("time", "user"), default="time",
                   help="time: every held-out click is a request at its time (default); user: one request per "
                        "user after their training clicks, training ads excluded, with item-kNN and EASE")
    p.add_argument("--split", choices=("time", "random"), default=None,
                   help="--protocol time: default the split the tower was trained on")
    p.add_argument("--seed", type=int, default=0, help="--protocol user without --tower: the split's seed")
    p.add_argument("--version", help="--protocol user: evaluate this version's tower and add each of its candidate "
                                     "sources alone and merged at the same K, at the funnel's quotas and with shares learned on a "
                                     "validation slice (a version of a --split user tower)")
    p.add_argument("--k", type=positive_int, default=100, help="K shown in the segment table (default 100)")
    add_json_flag(p)
    p.set_defaults(func=cmd_evaluate)


def build_parser_defaults() -> dict:
    """The defaults `adlens train` parses to (tests check they are core.tower.train's)."""
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return vars(parser.parse_args(["train", "--name", "x"]))


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from core.tower.train import train_tower

    res = train_tower(settings, args.name, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      temperature=args.temperature, seed=args.seed, hard_negatives=args.hard_negatives,
                      use_context=not args.no_context, ad_adapter=not args.no_adapter, cutoff=args.cutoff,
                      split=args.split, logq=args.logq, history_limit=args.history_limit, hidden=args.hidden,
                      id_embeddings=args.id_embeddings, progress=cli_progress(not args.json), tune=args.tune)
    if args.json:
        print_json(res)
        return 0
    cfg = res.config
    if cfg.get("tuning"):
        print_tuning(cfg["tuning"])
    print(f"tower {res.name!r} saved to {term(res.path)}")
    print(f"trained on {cfg['n_train_clicks']:,} clicks ({cfg['n_train_users']:,} users) in {res.train_seconds:.1f} s; "
          f"loss {res.losses[0]:.3f} -> {res.losses[-1]:.3f}")
    if res.report is None:
        print(f"not evaluated: {cfg['evaluation']}")
    elif res.report.to_dict().get("protocol") == "user":
        print_user_report(res.report)
    else:
        _print_report(res.report)
    return 0


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from core.common.errors import AdLensError

    if args.protocol == "user":
        from core.analysis.user_eval import evaluate_workspace

        if args.split is not None:
            raise AdLensError("--split is for --protocol time; the user protocol always splits (user, ad) pairs")
        report = evaluate_workspace(settings, args.tower, seed=args.seed, version=args.version)
    else:
        from core.tower.evaluate import evaluate_tower

        if args.tower is None:
            raise AdLensError("--protocol time needs --tower NAME (list them with `adlens versions`)")
        if args.version is not None:
            raise AdLensError("--version is for --protocol user (the time protocol evaluates a tower: --tower NAME)")
        from core.store.db import writable

        save = writable(settings)  # a read-only workspace is evaluated all the same, the report not saved
        report = evaluate_tower(settings, args.tower, split=args.split, write=save)
        if not save:
            print("note: the workspace is read-only, so this evaluation is printed but not saved with the tower",
                  file=sys.stderr)
    if args.json:
        print_json(report)
    elif args.protocol == "user":
        print_user_report(report)
    else:
        _print_report(report, seg_k=args.k)
    return 0


def print_tuning(t: dict) -> None:
    """What `--tune` tried: one row per training on the fitting side, its validation metric, the chosen one."""
    v = t["validation"]
    size = ", ".join(f"{n[2:].replace('_', ' ')} {c:,}" for n, c in v.items() if n.startswith("n_"))
    sp = v["split"]
    print(f"tuning on the validation split of the training side ({sp['kind']} split, seed {sp['seed']}: {size}); "
          f"{t['metric']} of most-popular there {t['baselines']['most_popular']:.3f}")
    keys = ("epochs", "id_embeddings", "history_limit", "logq")
    print(f"  {'try':>3} {'step':<7}" + "".join(f"{k:>15}" for k in keys) + f"{t['metric']:>10}{'seconds':>9}")
    for i, row in enumerate(t["tries"], 1):
        mark = "  <- chosen" if row["params"] == t["chosen"] else ""
        print(f"  {i:>3} {row['step']:<7}" + "".join(f"{str(row['params'].get(k, '-')):>15}" for k in keys)
              + f"{row['score']:>10.3f}{row['seconds']:>9.1f}{mark}")
    print(f"chosen: " + ", ".join(f"{k} {t['chosen'][k]}" for k in keys if k in t["chosen"])
          + f" (validation {t['metric']} {t['chosen_score']:.3f}); trained on the whole training side. "
          f"Tuning took {t['seconds']:.0f} s")


def print_user_report(report) -> None:
    """The user-protocol table: one row per model, HR/Recall/NDCG at every k, then the notes."""
    split = report.split
    print(f"\nuser protocol ({split['test_fraction']:.0%} of (user, ad) pairs held out, seed {split['seed']}): "
          f"{report.n_test_pairs:,} held-out pairs of {report.n_users:,} users, ranked among {report.n_ads:,} ads "
          f"minus each user's training ads" + (f" ({report.n_skipped} skipped: ad not embedded)" if report.n_skipped else ""))
    cols = [f"{m}@{k}" for k in report.ks for m in ("hr", "recall", "ndcg")]
    models = [m for m in USER_MODELS if m in report.models] + sorted(set(report.models) - set(USER_MODELS))
    print(f"{'model':<22}" + "".join(f"{c:>11}" for c in cols))
    for m in models:
        print(f"{m:<22}" + "".join(f"{_fmt(report.models[m].get(c)):>11}" for c in cols))
    for m, note in report.notes.items():
        print(f"  {m}: {note}")


def _fmt(v) -> str:
    return "   -  " if v is None or v != v else f"{v:6.3f}"


def _print_report(report, seg_k: int = 100) -> None:
    split = report.split
    where = f"cutoff {split['cutoff']}" if split["kind"] == "time" else f"{split['test_fraction']:.0%} held out"
    print(f"\n{split['kind']} split ({where}): {report.n_test_clicks:,} test clicks from {report.n_test_users:,} users, "
          f"ranked among all {report.n_ads:,} ads" + (f" ({report.n_skipped} skipped: ad not embedded)" if report.n_skipped else ""))
    models = [m for m in SHOWN_MODELS if m in report.models]
    print(f"{'metric':<14}" + "".join(f"{m:>14}" for m in models))
    for metric in ("recall", "hitrate", "ndcg"):
        for k in report.ks:
            key = f"{metric}@{k}"
            print(f"{key:<14}" + "".join(f"{_fmt(report.models[m].get(key)):>14}" for m in models))
    key = f"recall@{seg_k}"
    if not report.segments or key not in report.models.get("tower", {}):
        return
    print(f"\n{key} by segment")
    print(f"{'segment':<24}{'clicks':>8}{'users':>8}" + "".join(f"{m:>14}" for m in models))
    for s in report.segments:
        label = term(f"{s['by']}={s['value']}")
        print(f"{label:<24}{s['n_clicks']:>8,}{s['n_users']:>8,}"
              + "".join(f"{_fmt(s['models'][m].get(key)):>14}" for m in models))
