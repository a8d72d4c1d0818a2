"""The two no-reference quality judges side by side: where DNSMOS and Distill-MOS disagree on whether a variant is
better or worse than its parent, and how well they rank all variants alike."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from lib.report.report import wide

JUDGES = ("dnsmos_p808", "distillmos")
TIE = 0.02  # MOS: a change smaller than this on either judge is no direction


def disagreements(df: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """(every variant judged by both, with each judge's change against its parent in the same notebook and whether
    they point different ways; {variants, spearman}: the rank correlation of the two judges across variants)."""
    w = wide(df.assign(parent=df["parent"].fillna("")), index=("notebook", "variant", "parent", "threads"))
    if w.empty or not set(JUDGES) <= set(w):
        return (pd.DataFrame(columns=["notebook", "variant", "parent", *JUDGES, "disagree"]),
                {"variants": 0, "spearman": np.nan})
    w = w.dropna(subset=list(JUDGES)).groupby(["notebook", "variant"], as_index=False).first()
    own = w.set_index(["notebook", "variant"])[list(JUDGES)]
    rows = []
    for _, r in w.iterrows():
        parent = (r["notebook"], r["parent"])
        if not r["parent"] or parent not in own.index:
            continue
        d = {j: float(r[j] - own.loc[parent, j]) for j in JUDGES}
        ways = [np.sign(v) if abs(v) >= TIE else 0 for v in d.values()]
        rows.append({"notebook": r["notebook"], "variant": r["variant"], "parent": r["parent"],
                     **{f"{j}_change": v for j, v in d.items()}, "disagree": ways[0] * ways[1] < 0})
    rho = spearmanr(w[JUDGES[0]], w[JUDGES[1]]).statistic if len(w) >= 3 else np.nan
    return pd.DataFrame(rows), {"variants": int(len(w)), "spearman": float(rho)}
