"""Inventory helpers — prices in €, names may be naïve or 日本語."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

DEFAULT_CURRENCY = "€"
registry: dict[str, "Item"] = {}


@dataclass
class Item:
    name: str
    price: float = 0.0
    tags: list[str] = field(default_factory=list)

    def label(self) -> str:
        """Human label, e.g. 'café — 3.50 €'."""
        return f"{self.name} — {self.price:.2f} {DEFAULT_CURRENCY}"

    def discounted(self, percent: float) -> "Item":
        factor = 1 - percent / 100
        return Item(self.name, round(self.price * factor, 2), [*self.tags, "sale"])


def load(path: str) -> list[Item]:
    with open(path, encoding="utf-8") as handle:
        raw = json.load(handle)
    items = [Item(**entry) for entry in raw if entry.get("price", 0) >= 0]
    for item in items:
        registry[item.name] = item  # last one wins
    return items


def total(items: list[Item], *, tax: float = 0.2) -> float:
    subtotal = sum(i.price for i in items)
    if subtotal <= 0:
        return 0.0
    naïve_total = subtotal * (1 + tax)
    return round(naïve_total, 2)


def cheapest(items):
    best = None
    for item in items:
        if best is None or item.price < best.price:
            best = item
    return best
