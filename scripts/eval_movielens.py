"""Evaluate AdLens on MovieLens ml-latest-small under the user protocol.

    python scripts/eval_movielens.py /path/to/ml-latest-small [--workspace DIR] [--learn-quotas] [--tune]

Converts the MovieLens folder into AdLens's import format (data/README.md): every movie is an ad
(title as the title, "Genres: ..." as the body, the first genre as the vertical), every rating
is a clicked impression at its timestamp on the home feed, users have no profile. It ingests
that into a scratch workspace (reused when it already holds the data), embeds the ads (cached),
trains a tower on the user split, builds a version with its candidate sources and prints the
user-protocol table: the tower, the baselines, every candidate source alone and the merged
candidate set at the same K.

MovieLens's licence forbids redistribution: the data and the workspace stay outside the
repository; nothing in the tests depends on them.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NO_GENRE = "(no genres listed)"


def convert(src: Path, dst: Path) -> dict[str, int]:
    """Write ads.parquet and impressions.parquet for the MovieLens folder `src` into `dst`."""
    from core.common.errors import AdLensError

    missing = [f for f in ("movies.csv", "ratings.csv") if not (src / f).is_file()]
    if missing:
        raise AdLensError(f"{src}: no {' or '.join(missing)} there; pass the ml-latest-small folder (the one holding "
                          "movies.csv and ratings.csv)")
    movies = pd.read_csv(src / "movies.csv", dtype={"movieId": str, "title": str, "genres": str})
    ratings = pd.read_csv(src / "ratings.csv", dtype={"userId": str, "movieId": str})
    known = ratings["movieId"].isin(movies["movieId"])
    if not known.all():  # a rating of a movie missing from movies.csv cannot become an impression
        print(f"dropped {int((~known).sum())} rating(s) of movies not in movies.csv: "
              f"{ratings.loc[~known, 'movieId'].unique()[:5].tolist()}")
        ratings = ratings[known]
    genres = movies["genres"].fillna(NO_GENRE).str.split("|")
    first = genres.str[0].where(genres.str[0] != NO_GENRE, "unknown").str.lower()
    body = genres.map(lambda g: "" if g == [NO_GENRE] else "Genres: " + ", ".join(g))
    ads = pd.DataFrame({"ad_id": "m" + movies["movieId"], "title": movies["title"].str.strip(),
                        "body": body, "vertical": first})
    imps = pd.DataFrame({
        "impression_id": "r" + ratings["userId"] + "_" + ratings["movieId"],
        "user_id": "u" + ratings["userId"],
        "ad_id": "m" + ratings["movieId"],
        "ts": pd.to_datetime(ratings["timestamp"].astype("int64"), unit="s"),
        "placement": "home_feed",
        "clicked": True,
    })
    dst.mkdir(parents=True, exist_ok=True)
    ads.to_parquet(dst / "ads.parquet", index=False)
    imps.to_parquet(dst / "impressions.parquet", index=False)
    return {"ads": len(ads), "impressions": len(imps), "users": int(imps["user_id"].nunique()),
            "dropped_ratings": int((~known).sum())}


def prepare(src: Path, settings) -> None:
    """Convert, ingest (once) and embed (cached) into the workspace of `settings`."""
    from core.common.progress import cli_progress
    from core.data.ingest import ingest_directory
    from core.store.catalog import load_catalog, table_counts
    from core.store.db import make_engine
    from core.text.embedding_cache import embed_catalog

    engine = make_engine(settings.db_url)
    settings.workspace.mkdir(parents=True, exist_ok=True)
    if table_counts(engine).get("impressions", 0) == 0:
        t0 = time.perf_counter()
        counts = convert(src, settings.workspace / "movielens_import")
        print(f"converted {counts} in {time.perf_counter() - t0:.1f} s")
        ingest_directory(engine, settings.workspace / "movielens_import")
        print(f"ingested in {time.perf_counter() - t0:.1f} s")
    res = embed_catalog(settings, load_catalog(engine, with_impressions=False), progress=cli_progress())
    print(f"embedded {len(res.ad_ids):,} ads ({res.n_encoded:,} encoded) in {res.seconds:.1f} s")


SHORT_KEYS = {"batch_size": "bs", "epochs": "ep", "hidden": "h", "history_limit": "hl", "id_embeddings": "id",
              "logq": "lq", "lr": "lr", "temperature": "t", "seed": "s", "use_context": "ctx"}


def tower_name(params: dict) -> str:
    """A tower name that records its settings, so a rerun with the same settings reuses it (a
    digest where the settings do not fit a name's 64 characters)."""
    name = "ml_" + "_".join(f"{SHORT_KEYS.get(k, k)}{v}".replace(".", "p").replace("-", "m")
                            for k, v in sorted(params.items()))
    if len(name) > 64:
        name = "ml_" + hashlib.sha256(name.encode()).hexdigest()[:16]
    return name


def train_and_build(settings, params: dict, seed: int, name: str | None = None, *, tune: bool = False,
                    learn_quotas: bool = False) -> str:
    """Train (once per settings) a tower on the user split (`tune`: with `adlens train --tune`), or
    take the existing tower `name`, and build a Flat version over it (`learn_quotas`: with the
    quotas learned on the validation slice, as `build-index --learn-quotas`). Returns the version."""
    from core.analysis.quota_learning import quotas_builder
    from core.index.versions import build_version, list_versions
    from core.sources.ease import EASE_MAX_ADS
    from core.sources.registry import sources_builder
    from core.tower.registry import list_towers, read_tower_metrics
    from core.tower.train import train_tower

    name = name or tower_name({**params, "seed": seed, **({"tune": 1} if tune else {})})
    if name not in {t["name"] for t in list_towers(settings)}:
        res = train_tower(settings, name, split="user", seed=seed, tune=tune, **params)
        if tune:
            from core.cli.tower_cmds import print_tuning

            print_tuning(res.config["tuning"])
        print(f"trained {name} in {res.train_seconds:.0f} s; loss per epoch {res.losses}")
    version = name + ("_lq" if learn_quotas else "")
    if version not in {v["name"] for v in list_versions(settings)}:
        t0 = time.perf_counter()
        builders = (sources_builder({"ease": {"max_ads": EASE_MAX_ADS}}),)
        if learn_quotas:
            builders += (quotas_builder(read_tower_metrics(settings, name)["training"]),)
        v = build_version(settings, version, "Flat", tower=name, seed=seed, with_map=False, extra_builders=builders)
        print(f"built version {version} with its candidate sources in {time.perf_counter() - t0:.0f} s"
              + (f"; learned quotas {v.manifest.quotas['shares']} (validation {v.manifest.quotas['validation']})"
                 if learn_quotas else ""))
    return version


def main(argv: list[str] | None = None) -> int:
    from core.cli.tower_cmds import print_user_report
    from core.store.settings import load_settings
    from core.tower.defaults import TRAIN_DEFAULTS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", type=Path, help="the ml-latest-small folder (movies.csv, ratings.csv)")
    ap.add_argument("--workspace", type=Path, default=Path(tempfile.gettempdir()) / "adlens_movielens",
                    help="scratch workspace (kept and reused; default adlens_movielens in the temp folder)")
    ap.add_argument("--seed", type=int, default=0, help="the user split's seed (and the tower's)")
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 50, 100])
    for key in ("epochs", "batch_size", "lr", "temperature", "logq", "history_limit", "hidden"):
        ap.add_argument("--" + key.replace("_", "-"), type=type(TRAIN_DEFAULTS[key]), default=TRAIN_DEFAULTS[key])
    ap.add_argument("--id-embeddings", action=argparse.BooleanOptionalAction, default=TRAIN_DEFAULTS["id_embeddings"],
                    help="train the tower with ad id embeddings (default: as `adlens train`)")
    ap.add_argument("--tower", help="use this tower of the workspace (trained with --split user) instead of training; "
                                    "its version of the same name is built (with sources) if missing")
    ap.add_argument("--no-context", action="store_true", help="train the tower without request context")
    ap.add_argument("--tune", action="store_true", help="train with `adlens train --tune` (settings chosen on validation)")
    ap.add_argument("--learn-quotas", action="store_true",
                    help="build the version with `build-index --learn-quotas` (quotas learned on validation)")
    args = ap.parse_args(argv)
    settings = load_settings(workspace=args.workspace)
    prepare(args.path, settings)
    params = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "temperature", "logq", "history_limit",
                                            "hidden", "id_embeddings")}
    if args.no_context:
        params["use_context"] = False
    name = train_and_build(settings, params, args.seed, args.tower, tune=args.tune, learn_quotas=args.learn_quotas)
    from core.analysis.user_eval import evaluate_workspace

    print_user_report(evaluate_workspace(settings, ks=tuple(args.ks), version=name))
    return 0


if __name__ == "__main__":
    from core.common.errors import AdLensError
    from core.common.escape import term

    try:
        sys.exit(main())
    except AdLensError as exc:  # a message, not a traceback (as the adlens command line does)
        print(f"error: {term(str(exc), keep_newlines=True)}", file=sys.stderr)
        sys.exit(2)
