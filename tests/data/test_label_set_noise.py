"""Out-of-fold one-vs-rest label-noise flags for label sets, on real Banking77 texts with two label facets."""

from __future__ import annotations

import numpy as np
import pandas as pd

from data_checks.label_noise import flag_label_set_noise
from gradus.config.pipeline import LabelNoiseConfig
from tests.conftest import BANKING77

INTENTS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed", "pin_blocked",
           "transfer_not_received_by_recipient", "cash_withdrawal_charge", "declined_card_payment"]


def facet(intent: str) -> str:
    """A coarse topic beside the intent, so each text holds two labels."""
    return next((topic for topic in ("card", "top_up", "transfer", "cash") if topic in intent), "other")


def test_a_swapped_label_in_a_set_is_flagged_with_the_change_that_repairs_it() -> None:
    rows = pd.read_csv(BANKING77 / "train.csv").rename(columns={"category": "intent"})
    rows = rows[rows["intent"].isin(INTENTS)].reset_index(drop=True)
    truth = [sorted({intent, facet(intent)}) for intent in rows["intent"]]
    rng = np.random.default_rng(0)
    corrupted = set(rng.choice(len(rows), size=len(rows) // 20, replace=False).tolist())
    given, swapped_in = [], {}
    for i, labels in enumerate(truth):
        if i in corrupted:  # the intent replaced by another one: a label that does not fit, one missing
            wrong = str(rng.choice([x for x in INTENTS if x != rows["intent"][i]]))
            swapped_in[i] = wrong
            labels = sorted({wrong if label == rows["intent"][i] else label for label in labels})
        given.append(labels)
    flags = flag_label_set_noise(rows["text"], pd.Series(given), LabelNoiseConfig())
    flagged = set(np.flatnonzero(flags.flagged.to_numpy()).tolist())
    recall = len(flagged & corrupted) / len(corrupted)
    precision = len(flagged & corrupted) / max(len(flagged), 1)
    # Measured (seeded, deterministic): 1,108 rows, 55 swapped, 81 flagged; recall 0.98, precision 0.67; 45 of the
    # 54 found repaired by the suggestion exactly.
    assert recall >= 0.9 and precision >= 0.6, (recall, precision, len(flagged))
    repaired = [i for i in flagged & corrupted if f"-{swapped_in[i]}" in flags.suggested[i].split()
                and f"+{rows['intent'][i]}" in flags.suggested[i].split()]
    assert len(repaired) >= 0.5 * len(flagged & corrupted), [flags.suggested[i] for i in flagged & corrupted]
    assert (flags.suggested[~flags.flagged] == "").all()
