"""`adlens parity` as text: the verdict, slate overlap, recall tables, confusion, disagreements."""

from __future__ import annotations

import pandas as pd

from core.cli.output import text_frame
from core.common.escape import term
from core.traces.parity import ParityReport, percent

CONFUSION_ROWS = 12


def print_parity(rep: ParityReport) -> None:
    print(f"parity of version {term(rep.version)} with the logged traces: {rep.n_requests:,} requests "
          f"(seed {rep.seed}), {rep.n_logged_candidates:,} logged / {rep.n_replay_candidates:,} replayed "
          f"candidates, {rep.seconds:.1f} s")
    print(f"verdict: {term(rep.verdict)}")
    print(f"slates: {rep.slates_equal:,} equal ({percent(rep.slates_equal_rate)}), {rep.slate_sets_equal:,} with the "
          f"same ads; mean Jaccard {_fmt(rep.mean_jaccard)}, mean overlap@slate {_fmt(rep.mean_overlap)}")
    print("\nreplay's recall of the logged candidates, by the stage they reached in the log:")
    print(pd.DataFrame([{"logged stage": s, "logged": r.n, "replay reached it": r.hit, "recall": percent(r.recall)}
                        for s, r in rep.stage_recall.items()]).to_string(index=False))
    if rep.source_recall:
        print("\nby logged source:")
        print(text_frame(pd.DataFrame([{
            "source": s.name + ("" if s.modelled else " (not modelled by AdLens)"), "logged": s.n,
            "replay retrieved": s.retrieved, "recall": percent(s.recall), "found by the same source": s.same_source}
            for s in rep.source_recall])).to_string(index=False))
    if rep.confusion:
        print("\nlogged fate -> replayed fate (candidates):")
        rows = [{"logged": k, "replayed": rk, "n": n} for k, v in rep.confusion.items() for rk, n in v.items()]
        frame = pd.DataFrame(rows).sort_values(["n"], ascending=False, kind="stable").head(CONFUSION_ROWS)
        print(text_frame(frame).to_string(index=False))
        if len(rows) > CONFUSION_ROWS:
            print(f"  ... {len(rows) - CONFUSION_ROWS} more pairs (--json for all)")
    if rep.disagreements:
        print("\nwhat disagrees most (logged only: production gave it, the replay did not; knock-on: "
              "post-eligibility fates changed in the requests where it was found):")
        frame = pd.DataFrame([{"kind": d.kind, "name": d.name, "modelled": "yes" if d.modelled else "NO",
                               "candidates": d.count, "logged only": d.logged_only, "replay only": d.replay_only,
                               "fate changed": d.fate_changes, "slate changed": d.slate_changes,
                               "knock-on": d.knock_on, "knock-on slate": d.knock_on_slate, "requests": d.requests,
                               "example": d.examples[0].link if d.examples else ""}
                              for d in rep.disagreements[:10]])
        print(text_frame(frame).to_string(index=False))
        for d in rep.disagreements[:10]:
            if d.kind in ("ranker", "quota"):
                print(f"  {d.kind}: {term(d.label())}")
    else:
        print("\nno rule or source disagrees")
    if rep.unknown_sources:
        print("sources not modelled by AdLens: " + ", ".join(term(s) for s in rep.unknown_sources))
    if rep.unknown_reasons:
        print("reason codes not modelled by AdLens: " + ", ".join(term(s) for s in rep.unknown_reasons))
    for line in rep.not_replayed:
        print(f"not replayed: {term(line)}")


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"
