"""Deterministic generator of the embedded demo dataset: customer-support intents, noisy on purpose.

The data must make a model learn: intents share vocabulary (card, transfer, account, payment), phrasings
vary, a share of texts carry typos, and a few templates are genuinely ambiguous between two intents, so a
bag-of-words baseline stays well below 100 %. A handful of malformed rows exercise quarantine.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable
from typing import Any

import pandas as pd

from gradus.text import normalize_text

# Slot fillers shared across intents: overlapping vocabulary is the point.
_SLOTS: dict[str, list[str]] = {
    "card": ["card", "debit card", "credit card", "new card", "bank card", "visa card", "virtual card"],
    "amount": ["20 euros", "$50", "100 pounds", "a small amount", "the full amount", "£35", "300 dollars"],
    "time": ["yesterday", "last week", "two days ago", "this morning", "on monday", "a few days ago"],
    "person": ["my friend", "my landlord", "my sister", "a colleague", "the seller", "my mum"],
    "place": ["a shop", "the supermarket", "an online store", "a restaurant", "the petrol station"],
}

_INTENTS: dict[str, list[str]] = {
    "card_arrival": [
        "my {card} has not arrived yet",
        "when will my {card} arrive",
        "i ordered a {card} {time} and it still isn't here",
        "how long does delivery of the {card} take",
        "can i track the {card} you sent me",
        "still waiting for my {card} to come in the post",
    ],
    "card_lost_or_stolen": [
        "i lost my {card}",
        "my {card} was stolen {time}",
        "someone took my wallet with my {card} in it",
        "i can't find my {card} anywhere, please block it",
        "i think i left my {card} at {place}",
        "freeze my {card}, it's missing",
    ],
    "card_declined": [
        "my {card} was declined at {place}",
        "why was my payment declined {time}",
        "the {card} got rejected when i tried to pay",
        "payment failed at {place} even though i have money",
        "my {card} keeps getting declined online",
        "{place} would not accept my {card}",
    ],
    "transfer_not_received": [
        "{person} has not received the transfer i sent {time}",
        "my transfer to {person} never arrived",
        "i sent {amount} to {person} but they didn't get it",
        "where is the money i transferred {time}",
        "the bank transfer is not showing in {person}'s account",
        "transfer says completed but {person} has nothing",
    ],
    "transfer_fee": [
        "how much does it cost to send {amount}",
        "is there a fee for bank transfers",
        "why was i charged for my transfer to {person}",
        "what are the fees to transfer money abroad",
        "do you charge for sending money to {person}",
        "i paid a fee on a transfer {time}, why",
    ],
    "refund_request": [
        "i want a refund for what i bought at {place}",
        "how do i get my money back from {place}",
        "{place} promised a refund {time} but nothing yet",
        "can i request a refund for {amount}",
        "the refund from {place} is not in my account",
        "i returned an item, where is my refund",
    ],
    "duplicate_charge": [
        "i was charged twice at {place}",
        "the same payment shows up two times",
        "{place} took {amount} twice from my {card}",
        "there is a duplicate transaction on my account",
        "why do i see two identical charges from {time}",
        "double charge on my statement, please fix",
    ],
    "exchange_rate": [
        "what exchange rate do you use",
        "the rate for my payment abroad was wrong",
        "why did i get a bad exchange rate {time}",
        "how is the currency conversion rate calculated",
        "the exchange rate on my {card} payment looks off",
        "do you add a margin to the exchange rate",
    ],
    "top_up_failed": [
        "my top up failed",
        "i tried to top up {amount} but it didn't work",
        "adding money to my account keeps failing",
        "top up with my {card} was rejected {time}",
        "why can't i top up my account",
        "the top up is stuck and my balance did not change",
    ],
    "change_pin": [
        "how do i change my pin",
        "i want a new pin for my {card}",
        "can i reset the pin on my {card}",
        "i forgot my pin, how do i get it",
        "where in the app can i update my pin",
        "my pin is blocked after too many tries",
    ],
    "close_account": [
        "i want to close my account",
        "how do i delete my account",
        "please cancel my account and send me {amount} left",
        "i no longer need this account, close it",
        "what happens to my money if i close the account",
        "terminate my account effective {time}",
    ],
    "verify_identity": [
        "how do i verify my identity",
        "why do you need my id",
        "my identity verification failed {time}",
        "what documents do i need to verify my account",
        "the app keeps asking me to verify my identity",
        "i uploaded my passport but verification is pending",
    ],
}

# Texts that honestly belong to either of two intents: these cap any model's accuracy below 100 %.
_AMBIGUOUS: list[tuple[str, tuple[str, str]]] = [
    ("something is wrong with my {card} payment at {place}", ("card_declined", "duplicate_charge")),
    ("the money from {place} is missing", ("refund_request", "transfer_not_received")),
    ("i was charged {amount} i don't recognise", ("duplicate_charge", "transfer_fee")),
    ("my {card} doesn't work", ("card_declined", "card_lost_or_stolen")),
    ("the amount is wrong on my payment abroad", ("exchange_rate", "duplicate_charge")),
    ("i can't add money with my {card}", ("top_up_failed", "card_declined")),
    ("problem with my account access", ("verify_identity", "change_pin")),
    ("where is my {card}", ("card_arrival", "card_lost_or_stolen")),
]

# Paraphrases a pretrained encoder knows but a bag of words only sees when they occur in training data.
_SYNONYMS: dict[str, list[str]] = {
    "arrived": ["come", "turned up", "shown up", "been delivered"],
    "arrive": ["come", "turn up", "show up", "get here"],
    "lost": ["misplaced", "can't locate", "dropped"],
    "stolen": ["nicked", "taken", "pinched"],
    "declined": ["refused", "denied", "bounced", "not accepted"],
    "rejected": ["refused", "denied", "turned down"],
    "received": ["gotten", "seen", "been credited"],
    "sent": ["wired", "paid", "transferred"],
    "fee": ["charge", "cost", "commission"],
    "fees": ["charges", "costs", "commissions"],
    "charged": ["billed", "debited"],
    "refund": ["reimbursement", "money back", "repayment"],
    "twice": ["two times", "double", "more than once"],
    "rate": ["conversion", "fx rate", "price of the currency"],
    "close": ["shut down", "end", "get rid of"],
    "delete": ["remove", "erase", "wipe"],
    "verify": ["confirm", "prove", "validate"],
    "identity": ["id", "who i am", "identification"],
    "forgot": ["can't remember", "lost track of"],
    "money": ["cash", "funds"],
    "account": ["profile", "acount"],
}
SYNONYM_SHARE = 0.45

_PREFIXES = ["", "", "", "hi, ", "hello, ", "hey ", "excuse me, ", "quick question: ", "help! ", "good morning. "]
_SUFFIXES = ["", "", "", "?", ".", "!", " please", " thanks", " asap", " - urgent", " thank you"]
_MALFORMED: list[dict[str, str | None]] = [
    {"text": "my card has not arrived yet", "label": "card_arrival"},      # exact duplicate of a clean row
    {"text": "My card has not arrived yet!", "label": "card_arrival"},     # normalised duplicate
    {"text": "my card has not arrived yet", "label": "card_declined"},     # conflicting label
    {"text": "", "label": "card_arrival"},
    {"text": "   ", "label": "transfer_fee"},
    {"text": None, "label": "refund_request"},
    {"text": "my card was declined again", "label": None},
    {"text": "how do i change my pin", "label": ""},
    {"text": "\t\n", "label": "close_account"},
]

AMBIGUOUS_SHARE = 0.08
TYPO_SHARE = 0.25


def intents() -> list[str]:
    """The demo's label set, in a stable order."""
    return sorted(_INTENTS)


def _fill(template: str, rng: random.Random) -> str:
    return template.format(**{key: rng.choice(values) for key, values in _SLOTS.items()})


def _paraphrase(text: str, rng: random.Random) -> str:
    """Swap some words for synonyms, so phrasings vary beyond the templates."""
    words = text.split(" ")
    for i, word in enumerate(words):
        options = _SYNONYMS.get(word)
        if options and rng.random() < SYNONYM_SHARE:
            words[i] = rng.choice(options)
    return " ".join(words)


def _typo(text: str, rng: random.Random) -> str:
    """One realistic keyboard slip: swap, drop or double a letter inside a word."""
    positions = [i for i in range(1, len(text) - 1) if text[i].isalpha() and text[i + 1].isalpha()]
    if not positions:
        return text
    i = rng.choice(positions)
    kind = rng.randrange(3)
    if kind == 0:
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    if kind == 1:
        return text[:i] + text[i + 1 :]
    return text[:i] + text[i] + text[i:]


def _style(text: str, rng: random.Random) -> str:
    text = rng.choice(_PREFIXES) + _paraphrase(text, rng) + rng.choice(_SUFFIXES)
    if rng.random() < TYPO_SHARE:
        text = _typo(text, rng)
    roll = rng.random()
    if roll < 0.15:
        return text.upper() if rng.random() < 0.2 else text.capitalize()
    if roll < 0.5:
        return text[:1].upper() + text[1:]
    return text


def _row(rng: random.Random, labels: list[str]) -> dict[str, str]:
    if rng.random() < AMBIGUOUS_SHARE:
        template, pair = rng.choice(_AMBIGUOUS)
        return {"text": _style(_fill(template, rng), rng), "label": rng.choice(pair)}
    # Skewed class frequencies, like real support traffic (first intents are up to 3x more common).
    label = rng.choices(labels, weights=[3 - 2 * i / len(labels) for i in range(len(labels))])[0]
    return {"text": _style(_fill(rng.choice(_INTENTS[label]), rng), rng), "label": label}


# Label sets (model.task multi_label): a ticket raising one, two or three of the intents at once.
_CONNECTORS = [" and ", ", also ", ". also ", " - and ", ", plus ", ". another thing: ", " and on top of that "]
SET_SIZES = ((1, 0.55), (2, 0.38), (3, 0.07))
_MALFORMED_SETS: list[dict[str, object]] = [
    {"text": "my card has not arrived yet", "label": ["card_arrival"]},          # exact duplicate of a clean row
    {"text": "My card has not arrived yet!", "label": ["card_arrival"]},         # normalised duplicate
    {"text": "my card has not arrived yet", "label": ["card_declined"]},         # conflicting label set
    {"text": "", "label": ["card_arrival"]},
    {"text": None, "label": ["refund_request", "transfer_fee"]},
    {"text": "my card was declined again", "label": []},                         # empty set (not allowed)
    {"text": "how do i change my pin and close my account", "label": ["change_pin|close_account"]},  # separator
    {"text": "i want to upgrade my plan", "label": ["card_arrival", "plan_upgrade"]},  # a label on one row only
    {"text": "\t\n", "label": ["close_account"]},
]


def _set_row(rng: random.Random, labels: list[str]) -> dict[str, object]:
    size = rng.choices([k for k, _ in SET_SIZES], weights=[w for _, w in SET_SIZES])[0]
    chosen: list[str] = []
    while len(chosen) < size:  # skewed like the single-label demo: the first intents are more common
        label = rng.choices(labels, weights=[3 - 2 * i / len(labels) for i in range(len(labels))])[0]
        if label not in chosen:
            chosen.append(label)
    parts = [_paraphrase(_fill(rng.choice(_INTENTS[label]), rng), rng) for label in chosen]
    text = parts[0] + "".join(rng.choice(_CONNECTORS) + part for part in parts[1:])
    return {"text": _style(text, rng), "label": sorted(chosen)}


def generate_sets(rows: int = 3000, seed: int = 7) -> pd.DataFrame:
    """`rows` support tickets (text, label: a list of intents), malformed ones included, identical for the same
    (rows, seed): the demo for label sets."""
    return _assemble(rows, seed, _set_row, _MALFORMED_SETS)


def generate(rows: int = 3000, seed: int = 7) -> pd.DataFrame:
    """Return `rows` rows (text, label), malformed ones included, identical for the same (rows, seed)."""
    return _assemble(rows, seed, _row, _MALFORMED)


def _assemble(rows: int, seed: int, make: Callable[[random.Random, list[str]], dict[str, Any]],
              malformed: list[dict[str, Any]]) -> pd.DataFrame:
    """Distinct generated rows (the first malformed row, a clean text, leads), the other malformed rows at
    seeded places."""
    rng = random.Random(seed)
    labels = intents()
    # Real support traffic rarely repeats a message word for word: keep each normalised text once.
    seen = {normalize_text(str(malformed[0]["text"] or ""))}
    records: list[dict[str, Any]] = [dict(malformed[0])]
    while len(records) < rows - len(malformed) + 1:
        row = make(rng, labels)
        key = normalize_text(str(row["text"]))
        if key not in seen:
            seen.add(key)
            records.append(row)
    for bad in malformed[1:]:
        records.insert(rng.randrange(len(records) + 1), dict(bad))
    return pd.DataFrame.from_records(records, columns=["text", "label"])


# Entities (model.task token_classification, being built): support messages with amounts, dates, card endings and
# merchants marked as character spans (`label`: a list of {start, end, label}).
_ENTITY_VALUES: dict[str, list[str]] = {
    "amount": ["€20", "$50.75", "100 pounds", "£35", "300 dollars", "12.99 euros", "€1,250"],
    "date": ["yesterday", "3 may", "on monday", "12/03", "last week", "this morning", "21 june"],
    "card_ending": ["4242", "0005", "1881", "9934", "7310"],
    "merchant": ["tesco", "amazon", "café nero", "mcdonald's", "uber", "zoë's bakery", "müller"],
}
_ENTITY_TEMPLATES = [
    "i was charged {amount} twice at {merchant} {date}",
    "my card ending {card_ending} was declined at {merchant}",
    "refund the {amount} that {merchant} took {date}",
    "there is a payment of {amount} to {merchant} i don't recognise",
    "card {card_ending} 💳 was used {date} without me",
    "why did {merchant} charge me {amount} on card {card_ending}",
    "i paid {amount} {date} but it still says pending",
    "cancel the transfer of {amount} i made {date}",
    "my card has not arrived yet",
    "how do i change my pin",
    "{merchant} says my card {card_ending} expired",
]
_MALFORMED_ENTITIES: list[dict[str, object]] = [
    {"text": "i paid €20 at tesco yesterday",
     "label": [{"start": 7, "end": 10, "label": "amount"}, {"start": 14, "end": 19, "label": "merchant"},
               {"start": 20, "end": 29, "label": "date"}]},                                        # a clean row
    {"text": "refund me £35", "label": [{"start": 10, "end": 40, "label": "amount"}]},            # outside the text
    {"text": "card 4242 declined", "label": [{"start": 5, "end": 9, "text": "4243", "label": "card_ending"}]},
    {"text": "amazon took $50.75", "label": [{"start": 0, "end": 6, "label": "merchant"},
                                             {"start": 3, "end": 11, "label": "date"}]},           # overlapping
    {"text": "uber charged me twice", "label": [{"start": 0, "end": 4, "label": "vendor"}]},       # unknown type
    {"text": "", "label": []},
    {"text": "pay 0005 now", "label": [{"start": 4, "end": 4, "label": "card_ending"}]},            # empty span
]


def _entity_row(rng: random.Random, labels: list[str]) -> dict[str, object]:
    """One message from a template: each field's value written in, its span recorded as the text grows."""
    text, entities = rng.choice(_PREFIXES), []
    for literal, field, _, _ in string.Formatter().parse(rng.choice(_ENTITY_TEMPLATES)):
        text += literal
        if field:
            value = rng.choice(_ENTITY_VALUES[field])
            entities.append({"start": len(text), "end": len(text) + len(value), "label": field})
            text += value
    text += rng.choice(_SUFFIXES)
    if rng.random() < ENTITY_TYPO_RATE:
        text = _typo_outside(rng, text, entities)
    return {"text": text, "label": entities}


# A share of the entity demo's messages carry a typo outside their entities, as users type them: a model trained on
# clean templates learned to call any unknown word a merchant ("my crad" → merchant 'crad'), and the evaluate stage's
# typo check stopped its first model at the gate (40 % stable against 75 %).
ENTITY_TYPO_RATE = 0.3


def _typo_outside(rng: random.Random, text: str, entities: list[dict[str, Any]]) -> str:
    """Two adjacent inner letters of one word of 4+ letters swapped, the word outside every entity (the offsets
    stay: the text keeps its length)."""
    words = [m for m in re.finditer(r"[a-z]{4,}", text)
             if all(m.end() <= e["start"] or e["end"] <= m.start() for e in entities)]
    if not words:
        return text
    word = rng.choice(words)
    i = word.start() + 1 + rng.randrange(len(word.group()) - 2)
    return text[:i] + text[i + 1] + text[i] + text[i + 2:]


def generate_entities(rows: int = 3000, seed: int = 7) -> pd.DataFrame:
    """`rows` support messages (text, label: their entities as character spans), malformed ones included,
    identical for the same (rows, seed): the demo for entity extraction."""
    return _assemble(rows, seed, _entity_row, _MALFORMED_ENTITIES)
