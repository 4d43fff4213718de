"""Personal data patterns: e-mail addresses, payment card numbers (Luhn-checked) and phone numbers. Used by
the validate stage (flag, mask or quarantine) and by the inference service (masking its prediction log)."""

from __future__ import annotations

import re

import pandas as pd

PATTERNS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    "card": re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)"),
    # Not inside a longer run of digit groups (order numbers, card-like numbers that fail Luhn).
    "phone": re.compile(r"(?<![\w+])(?<!\d[ .-])\+?\d{1,3}?[ .-]?\(?\d{2,4}\)?[ .-]?\d{3,4}[ .-]?\d{3,4}"
                        r"(?![ .-]?\d)"),
}
MASKS = {"email": "[EMAIL]", "card": "[CARD]", "phone": "[PHONE]"}
_CHEAP = re.compile(r"@|\d{3}")  # a text with neither cannot match any pattern: skip it fast


def luhn_valid(candidate: str) -> bool:
    """True when the digits of `candidate` pass the Luhn checksum (real card numbers do)."""
    digits = [int(c) for c in candidate if c.isdigit()]
    total = 0
    for i, digit in enumerate(reversed(digits)):
        if i % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return len(digits) >= 13 and total % 10 == 0


def find_pii(text: str, kinds: tuple[str, ...]) -> list[str]:
    """The kinds of personal data in one text, in `kinds` order."""
    if not _CHEAP.search(text):
        return []
    found = []
    for kind in kinds:
        matches = PATTERNS[kind].findall(text)
        if kind == "card":
            matches = [m for m in matches if luhn_valid(m)]
        if kind == "phone" and "card" in found:
            matches = [m for m in matches if not luhn_valid(m)]
        if matches:
            found.append(kind)
    return found


def mask_pii(text: str, kinds: tuple[str, ...]) -> str:
    """Replace each personal-data match with a placeholder such as [EMAIL]."""
    for kind in kinds:
        if kind == "card":
            text = PATTERNS[kind].sub(lambda m: MASKS["card"] if luhn_valid(m.group()) else m.group(), text)
        else:
            text = PATTERNS[kind].sub(MASKS[kind], text)
    return text


def pii_column(texts: pd.Series, kinds: tuple[str, ...]) -> pd.Series:
    """Comma-joined PII kinds per row ('' when none), computed once per distinct text."""
    unique = pd.Series(texts.dropna().unique())
    found = {t: ",".join(find_pii(t, kinds)) for t in unique}
    return texts.map(found).fillna("")
