"""Reading a Ferry's Prometheus endpoint: one scrape's text, and its samples by name and
labels."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

#: A sample's name and its labels, as sorted (label, value) pairs.
SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def scrape(url: str, timeout: float = 10.0) -> str:
    """The text exposition at `url` (plain HTTP on loopback)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http only
        body: bytes = response.read()
    return body.decode()


def samples(text: str) -> dict[SampleKey, float]:
    """Every sample of a scrape by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class Scrape:
    """One scrape's samples; `value(name, **labels)` is 0.0 for a sample that is absent."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = samples(text)

    @classmethod
    def of(cls, url: str) -> Scrape:
        return cls(scrape(url))

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def has(self, name: str, **labels: str) -> bool:
        return (name, tuple(sorted(labels.items()))) in self.samples

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}
