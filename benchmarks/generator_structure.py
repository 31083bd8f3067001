"""What structure the synthetic data has under each generator setting (issue 9 item 7).

    .venv/bin/python benchmarks/generator_structure.py --out runs/generator_structure
    .venv/bin/python benchmarks/generator_structure.py --seeds 7,8,9 --out DIR   # spread

Generates the default-sized data set (5,000 items, 2,000 users) once per variant: the
``text`` preset (today's default), each structure setting of the ``identity`` preset switched
on alone, and the whole ``identity`` preset; measures each with
:func:`towers.data.stats.structure_stats` (what `towerserve data stats` prints: next-item
HitRate@10 of popularity, item co-occurrence and BM25 text neighbours on a time split at 0.8,
95 % Wilson intervals, Gini of item event counts). Writes ``generator_structure.json`` and
``generator_structure.md`` under --out and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from towers.data import GenerateConfig, generate, load_dataset  # noqa: E402
from towers.data.generate import STRUCTURE_PRESETS  # noqa: E402
from towers.data.stats import structure_stats  # noqa: E402

log = logging.getLogger("generator_structure")


def variants() -> dict[str, dict[str, float | int]]:
    """Variant name -> structure settings: text, each identity setting alone, identity."""
    text, identity = STRUCTURE_PRESETS["text"], STRUCTURE_PRESETS["identity"]
    out: dict[str, dict[str, float | int]] = {"text (default)": dict(text)}
    out[f"+ bundles ({identity['bundle_strength']:g}, size {identity['bundle_size']})"] = {
        **text,
        "bundle_strength": identity["bundle_strength"],
        "bundle_size": identity["bundle_size"],
    }
    out[f"+ item_zipf {identity['item_zipf']:g}"] = {**text, "item_zipf": identity["item_zipf"]}
    out[f"+ vague items ({identity['vague_item_share']:g})"] = {
        **text,
        "vague_item_share": identity["vague_item_share"],
    }
    out["identity (all three)"] = dict(identity)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for data and results")
    ap.add_argument("--seeds", default="7", help="comma-separated generator seeds")
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--users", type=int, default=2000)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for seed in seeds:
        for i, (name, settings) in enumerate(variants().items()):
            cfg = GenerateConfig(
                n_items=args.items,
                n_users=args.users,
                seed=seed,
                **settings,  # type: ignore[arg-type]
            )
            folder = args.out / f"seed{seed}" / f"variant{i}"
            t0 = time.perf_counter()
            generate(cfg, folder)
            stats = structure_stats(load_dataset(folder))
            rows.append(
                {
                    "variant": name,
                    "seed": seed,
                    "settings": settings,
                    "users": stats.n_users,
                    "items": stats.n_items,
                    "events": stats.n_events,
                    "gini": stats.gini_items,
                    "top1pct_share": stats.top1pct_event_share,
                    "scored_users": stats.n_eval_users,
                    "hit_rate": {k: v.rate for k, v in stats.hit_rates.items()},
                    "interval": {k: v.interval for k, v in stats.hit_rates.items()},
                    "verdict": stats.verdict(),
                    "seconds": time.perf_counter() - t0,
                }
            )
            log.info("%s seed %d: %s", name, seed, stats.verdict())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generator_structure.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        f"`{shlex.join(['python', *sys.argv])}`",
        "",
        "| variant | seed | events | Gini | top 1 % share | users scored | popularity | "
        "co-occurrence | text (BM25) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        cells = [
            f"{r['hit_rate'][k]:.3f} [{r['interval'][k][0]:.3f}, {r['interval'][k][1]:.3f}]"
            for k in ("popularity", "co-occurrence", "text")
        ]
        lines.append(
            f"| {r['variant']} | {r['seed']} | {r['events']:,} | {r['gini']:.3f} | "
            f"{r['top1pct_share']:.3f} | {r['scored_users']:,} | " + " | ".join(cells) + " |"
        )
    md = "\n".join(lines) + "\n"
    (args.out / "generator_structure.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
