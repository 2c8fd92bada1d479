"""Benchmark: criteria matching stays linear in the prospect's text, whatever the lists hold.

Scores 10,000 prospects whose titles and industries are 255 characters (the most a prospect
field holds) against criteria at their bounds: 500 title keywords and 500 industries (the
most a list may hold), each up to 19 characters, so together under the 10,000-character bound
per list. It times the trie matcher the scorer uses (`qualifier.criteria.WordMatcher`) and,
for comparison, one regular-expression alternation of the same words, which is what the
scorer used before and what let 150,000 keywords starve a worker for 13 minutes.

    .venv/bin/python bench/matching.py [--prospects 10000]
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path[0] = str(PROJECT_DIR)


def words(rng: random.Random, count: int) -> tuple[str, ...]:
    letters = "abcdefghij"
    return tuple(
        "".join(rng.choice(letters) for _ in range(rng.randrange(3, 10)))
        + " "
        + "".join(rng.choice(letters) for _ in range(rng.randrange(3, 9)))
        for _ in range(count)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prospects", type=int, default=10_000)
    args = parser.parse_args()

    from qualifier.criteria import MAX_LIST_ITEMS

    for count in (MAX_LIST_ITEMS, 5_000, 50_000):
        compare(count, args.prospects, within_bounds=count <= MAX_LIST_ITEMS)


def compare(count: int, prospects: int, *, within_bounds: bool) -> None:
    from qualifier.criteria import WordMatcher

    rng = random.Random(8)
    keywords = words(rng, count)
    # Texts made of keywords with their last letter changed: nearly every word start begins a
    # partial match of many keywords, the hardest case for both ways of matching.
    texts = [
        " ".join(k[:-1] + "z" for k in rng.sample(keywords, 30))[:255] + " " + rng.choice(keywords)
        for _ in range(prospects)
    ]
    matcher = WordMatcher(keywords)
    started = time.perf_counter()
    for text in texts:
        matcher.search(text)
    trie = time.perf_counter() - started

    alternatives = "|".join(re.escape(k.casefold()) for k in sorted(keywords, key=len)[::-1])
    pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")
    # The regex takes minutes on the largest lists: it is timed on a sample there.
    sample = texts if count <= 5_000 else texts[:1_000]
    started = time.perf_counter()
    regex_hits = [pattern.search(text.casefold()) is not None for text in sample]
    regex = (time.perf_counter() - started) * len(texts) / len(sample)
    assert regex_hits == [matcher.search(text) is not None for text in sample]

    bound = "the most a list may hold" if within_bounds else "beyond the bound, for scale"
    print(f"{count:,} keywords ({bound}), {prospects:,} texts of about 270 characters:")
    print(f"  trie (WordMatcher): {trie:7.2f} s  ({trie / prospects * 1e6:6.0f} µs per text)")
    sampled = "" if len(sample) == len(texts) else f", timed on {len(sample):,} texts"
    print(
        f"  regex alternation:  {regex:7.2f} s  ({regex / prospects * 1e6:6.0f} µs per text"
        f"{sampled})"
    )


if __name__ == "__main__":
    main()
