"""The demo's "production" funnel and its logs: what `adlens parity` finds on the first run.

`adlens demo` writes `<workspace>/production/` (PRODUCTION_DIR): a funnel that differs from
AdLens's default replay in three planted, documented ways, as files a team reads and reuses —

- `funnel.toml`: (1) an eligibility rule AdLens does not have, `PACING_THROTTLE` (a campaign
  that has spent more than PACING_SHARE of today's budget is held back), (2) a different quota
  for one source (`[quotas]`, QUOTA_SOURCE takes PRODUCTION_QUOTA candidates instead of AdLens's
  default) and (3) a different early ranker (`[ranker]`: `ranker.onnx` + `ranker.json`);
- `ranker.onnx` / `ranker.json`: a logistic pCTR model written with the `onnx` package's helper
  API (deterministic weights, no training) that favours ads the popular-in-context source found
  and ads the tower scores high, whatever their click history — an order visibly unlike AdLens's
  fitted pCTR — and its signature (core.funnel.rankers);
- `logs/requests.parquet` + `logs/trace_candidates.parquet`: PRODUCTION_REQUESTS requests sampled
  from the demo's impressions (their logged contexts and times) run through that funnel on version
  PRODUCTION_VERSION and written by the export path (core.traces.export), then imported
  (core.traces.importer) so the dashboard's logged mode and `adlens parity` have them.

`adlens parity --version ivf` then names the three differences; `adlens build-index --funnel
<workspace>/production/funnel.toml` builds a version that reproduces the log (data/README.md,
"Parity"). Tests: tests/test_demo_production.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from core.common.timer import StageTimer
from core.store.artifacts import write_via_temp

PRODUCTION_DIR = "production"
LOGS_DIR = "logs"
PRODUCTION_VERSION = "ivf"  # the demo's main version (the dashboard opens on it)
PRODUCTION_REQUESTS = 150  # ~40 ms of CPU each at 10k ads: the step stays a few seconds
PRODUCTION_SEED = 11
PACING_SHARE = 0.75
QUOTA_SOURCE, PRODUCTION_QUOTA = "popular_in_context", 200
RANKER_FILE, SIGNATURE_FILE = "ranker.onnx", "ranker.json"
RANKER_WEIGHTS: dict[str, float] = {
    "candidate.score": 2.0,
    "candidate.found_popular_in_context": 1.5,
    "candidate.found_co_engagement": 0.5,
    "request.placement=home_feed": -0.3,
}
"""The production ranker's logistic weights by feature (core.funnel.ranker_features names)."""
RANKER_BIAS = -4.5

FUNNEL_TOML = f'''# The demo's "production" funnel: how it differs from AdLens's default replay (written by
# `adlens demo`; data/README.md, "Parity"). Build a version that replays it with
#   adlens build-index --name ivf-prod --tower tower --funnel production/funnel.toml
format = 1
unlisted_builtins = "first"   # AdLens's eleven built-in rules run first, as in the default funnel
description = "production: pacing throttle, a larger {QUOTA_SOURCE} quota, its own early ranker"

[[rule]]                      # planted difference 1: a rule AdLens does not have
code = "PACING_THROTTLE"
description = "campaigns past {PACING_SHARE:.0%} of today's budget are held back to pace their spend"
expr = "campaign.spend_today > {PACING_SHARE} * campaign.daily_budget"

[quotas]                      # planted difference 2: {QUOTA_SOURCE} contributes more candidates
{QUOTA_SOURCE} = {PRODUCTION_QUOTA}
'''
RANKER_TOML = f'''
[ranker]                      # planted difference 3: production's own early ranker (pCTR)
onnx = "{RANKER_FILE}"
signature = "{SIGNATURE_FILE}"
'''


def ranker_model_bytes() -> bytes:
    """The production ranker as ONNX: pctr = sigmoid(features @ RANKER_WEIGHTS + RANKER_BIAS),
    input "features" (batch, len(RANKER_WEIGHTS)) float32, output "pctr" (batch, 1)."""
    from onnx import TensorProto, helper

    w = np.array(list(RANKER_WEIGHTS.values()), np.float32).reshape(-1, 1)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["logit0"]),
         helper.make_node("Add", ["logit0", "b"], ["logit"]),
         helper.make_node("Sigmoid", ["logit"], ["pctr"])],
        "production_ranker",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", len(RANKER_WEIGHTS)])],
        [helper.make_tensor_value_info("pctr", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor("w", TensorProto.FLOAT, list(w.shape), w.ravel().tolist()),
         helper.make_tensor("b", TensorProto.FLOAT, [1], [RANKER_BIAS])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="adlens-demo")
    model.ir_version = 8
    return model.SerializeToString(deterministic=True)


def ranker_signature() -> dict:
    """The signature of ranker_model_bytes() (the shared ranker spec, core.funnel.rankers)."""
    return {"format": 1, "inputs": [{"name": "features", "features": list(RANKER_WEIGHTS)}],
            "output": {"name": "pctr", "kind": "probability"}}


def write_production_files(folder: Path) -> list[str]:
    """funnel.toml, ranker.onnx and ranker.json into `folder` (atomic writes)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {RANKER_FILE: ranker_model_bytes(),
             SIGNATURE_FILE: (json.dumps(ranker_signature(), indent=2) + "\n").encode(),
             "funnel.toml": (FUNNEL_TOML + RANKER_TOML).encode()}
    for name, data in files.items():
        write_via_temp(folder / name, lambda p, d=data: Path(p).write_bytes(d))
    return sorted(files)


def production_funnel(folder: Path) -> dict:
    """FunnelEngine's keyword arguments for the production funnel in `folder` (its definition
    and its early ranker), to run it on a version built without them."""
    from core.funnel.definition import load_definition
    from core.funnel.ranker_build import ranker_choice

    defn = load_definition(folder / "funnel.toml")
    choice = ranker_choice(None, None, defn.ranker, folder, defn.name)
    return {"funnel_definition": defn, "ranker": choice.open() if choice is not None else None}


def build_production_logs(settings, db, *, n_requests: int = PRODUCTION_REQUESTS, seed: int = PRODUCTION_SEED,
                          replace: bool = False, progress=None) -> dict:
    """Write the production funnel's files, run `n_requests` sampled requests through it on
    PRODUCTION_VERSION, export them as logged traces and import them. Idempotent: logs already
    written are re-imported (a no-op when unchanged) unless `replace` (then rewritten, and the
    workspace's imported traces replaced)."""
    from core.funnel.engine import open_engine
    from core.funnel.params import FunnelParams
    from core.traces.export import export_replay
    from core.traces.importer import import_traces

    timer = StageTimer()
    folder = Path(settings.workspace) / PRODUCTION_DIR
    files = write_production_files(folder)
    timer.lap("files")
    logs = folder / LOGS_DIR
    if replace and logs.exists():
        shutil.rmtree(logs)
    wrote = not (logs / "trace_candidates.parquet").exists()
    if wrote:
        shutil.rmtree(logs, ignore_errors=True)  # a half-written folder from an interrupted build
        engine = open_engine(settings, PRODUCTION_VERSION, **production_funnel(folder))
        timer.lap("open_engine")
        export_replay(engine, logs, n_requests, seed=seed, params=FunnelParams(exact_ranks=False),
                      progress=None if progress is None else lambda f, s: progress(0.9 * f, s))
        timer.lap("replay_export")
    rep = import_traces(settings, db, logs, replace=replace)
    timer.lap("import")
    return {"directory": str(folder), "files": files, "version": PRODUCTION_VERSION, "written": wrote,
            "set_id": rep.set_id, "requests": rep.n_requests, "candidates": rep.n_candidates,
            "seconds": {k: round(v / 1e3, 2) for k, v in timer.done().items()}}
