"""The gate before hours of adversarial training (issue 66): for each arm, packed after a short run, does its
discriminator learn (its loss against chance, and the adversarial share of the generator's loss, interval by
interval of its curve), and does the arm move a judge (DNSMOS P.808 and SIG, Distill-MOS and Whisper's WER on the
development set, which no corpus and no verdict uses, paired sentence by sentence with the pack it started from)?
Reads packs only; the judges score, they choose nothing the arm trains on."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib.core.results import atomic_write_text, portable, write_env
from lib.harness import bench
from lib.jobs.run_state import DEV_SET, dev_judged, paired_changes
from lib.training import disc_state, discriminators
from lib.studies.study_options import INTERVAL, AdversaryGate

LEARNS = 0.8  # "clearly below chance": an interval's discriminator loss at most this share of chance
MIN_SHARE = 0.15  # the adversarial and feature-matching terms' least share of the generator's loss
JUDGES = ("dnsmos_p808", "dnsmos_sig", "distillmos", "wer")
# an arm's RunConfig as the record keeps it: not `config.json`, which names a pack (a part with its teacher)
KEPT_CONFIG = "run_config.json"
MOVES = ("dnsmos_p808", "distillmos")  # the judges an arm must move, upwards, with its interval above 0
_LOGGER = logging.getLogger(__name__)


def chance(names) -> float:
    """The LSGAN loss of a constant guess for the discriminators `names` (disc_state.chance_loss)."""
    return disc_state.chance_loss(discriminators.build(list(names)))


def arm_setup(folder: Path) -> dict:
    """What an arm's folder (a pack, or a run's part folder with its RunConfig) says of its adversary: the
    discriminators, their window, rate and warm-up, and the generator's objective."""
    path = Path(folder) / "config.json"
    config = json.loads((path if path.exists() else Path(folder) / KEPT_CONFIG).read_text())
    recipe = config.get("recipe") if isinstance(config.get("recipe"), dict) else None
    if recipe is None:  # a pack: its run's RunConfig is not kept, its discriminators are
        meta = disc_state.info(folder) or {}
        return {"discriminators": config.get("discriminators") or meta.get("discriminators", []),
                "recipe": config.get("recipe", "")}
    return {"discriminators": list(recipe["discriminators"]), "recipe": config.get("recipe_name", ""),
            "disc_segment": recipe.get("disc_segment", 0), "lr_d": recipe.get("lr_d"),
            "disc_warmup_steps": recipe.get("disc_warmup_steps", 0), "batch": config["options"].get("batch"),
            "objective": ("HiFi-GAN (piper's)" if recipe.get("gan_objective") else
                          f"regression + adversarial x{recipe.get('adv_weight', 1.0):g}")}


def curve_table(arm: str, folder: Path, interval: int = INTERVAL) -> pd.DataFrame:
    """The arm's curve (curve.csv of a pack or a run's part folder: this run's rows) by `interval` steps: the
    discriminators' loss, its ratio to chance, the adversarial share of the generator's loss (rows with a generator
    step against them), the held-out mel L1, and whether the discriminators learn and their share holds."""
    curve = pd.read_csv(Path(folder) / "curve.csv")
    for col in ("adv_share", "heldout_mel"):  # an arm stopped in its discriminator-only steps has no generator terms
        if col not in curve:
            curve[col] = np.nan
    level = chance(arm_setup(folder)["discriminators"])
    curve["interval"] = (np.ceil(curve["step"] / interval) * interval).astype(int)
    table = curve.groupby("interval").agg(
        step=("step", "max"), disc_steps=("disc_steps", "max"), loss_d=("loss_d", "mean"),
        adv_share=("adv_share", "mean"), heldout_mel=("heldout_mel", "last")).reset_index(drop=True)
    table.insert(0, "arm", arm)
    table["chance"] = level
    table["loss_d_to_chance"] = table["loss_d"] / level
    table["learns"] = table["loss_d_to_chance"] <= LEARNS
    table["share_holds"] = table["adv_share"] >= MIN_SHARE
    return table


def setups(arms: dict[str, Path]) -> pd.DataFrame:
    """One row per arm: its adversary (arm_setup)."""
    return pd.DataFrame([{"arm": a, **{k: (", ".join(v) if isinstance(v, list) else v)
                                       for k, v in arm_setup(f).items()}} for a, f in arms.items()])


def summary(curves: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """One row per arm: whether its discriminators learned (last interval), its last share, and each judge's paired
    change against the start pack and against the teacher (mean, 95 % interval, n; WER's sign as the others':
    higher is better, so a rise in WER reads negative), and whether it passes the gate. An arm whose
    discriminators never left chance is not judged (`judged` False): the gate stopped it before a judge could."""
    rows = []
    for arm, c in curves.groupby("arm", sort=False):
        last = c.iloc[-1]
        shares = c["adv_share"].dropna()
        row = {"arm": arm, "steps": int(last["step"]), "disc_steps": int(last["disc_steps"]),
               "loss_d_to_chance": float(last["loss_d_to_chance"]),
               "lowest_loss_d_to_chance": float(c["loss_d_to_chance"].min()),
               "adv_share": float(shares.iloc[-1]) if len(shares) else np.nan,
               "learns": bool(c["learns"].any()), "share_holds": bool(len(shares) and shares.iloc[-1] >= MIN_SHARE),
               "judged": arm in set(scores.get("decoder", []))}
        if not row["judged"]:
            rows.append({**row, "moves_a_judge": False, "passes": False})
            continue
        changes = paired_changes(scores[scores["decoder"].isin(["start", arm])], "start").set_index("metric")
        for m in JUDGES:
            for against in ("start", "teacher"):
                row.update({f"{m}_vs_{against}{end}": changes.loc[m, f"vs_{against}{end}"]
                            for end in ("", "_lo", "_hi")})
        row["n"] = int(changes["n"].min())
        up = any(row[f"{m}_vs_start_lo"] > 0 for m in MOVES)
        down = any(row[f"{m}_vs_start_hi"] < 0 for m in MOVES)
        row["moves_a_judge"] = up and not down
        row["passes"] = row["learns"] and row["share_holds"] and row["moves_a_judge"]
        rows.append(row)
    return pd.DataFrame(rows)


def run(cfg: AdversaryGate) -> pd.DataFrame:
    """Tabulate each arm's curve, judge the arms and their start on the development set, write the three tables and
    env.json (this machine, threads, the config, the set); returns the summary."""
    torch.set_num_threads(cfg.threads)
    root, out = Path(cfg.root), Path(cfg.out)
    arms = {"/".join(Path(a).parts[-2:]): (root / a if (root / a).exists() else Path(a)) for a in cfg.arms}
    curves = pd.concat([curve_table(name, folder, cfg.interval) for name, folder in arms.items()], ignore_index=True)
    learned = set(curves.loc[curves["learns"], "arm"])  # an adversary at chance has nothing to teach: not judged
    packed = {a: f for a, f in arms.items() if a in learned and (f / "model.safetensors").exists()}
    scores = (dev_judged({"start": root / cfg.start, **packed}, cfg.sentences, JUDGES) if packed else
              pd.DataFrame(columns=["id", "metric", "value", "teacher", "decoder", "steps"]))
    table = summary(curves, scores)
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in (("gate_setup.csv", setups(arms)), ("gate_curve.csv", curves), ("gate_judged.csv", scores),
                        ("gate.csv", table)):
        atomic_write_text(out / name, frame.to_csv(index=False))
    for arm, folder in arms.items():  # each arm's curve and config kept beside the tables (a run's folder is local)
        for name, kept in (("curve.csv", "curve.csv"), ("config.json", KEPT_CONFIG)):
            atomic_write_text(out / "arms" / arm / kept, portable((folder / name).read_text()))
    env = {**bench.environment(threads=cfg.threads), "config": vars(cfg), "development_set": DEV_SET,
           "bounds": {"learns": LEARNS, "min_share": MIN_SHARE}}
    write_env(out / "env.json", env)
    _LOGGER.info("wrote %s\n%s", out, table.round(3).T.to_string())
    return table
