"""Detection settings: frozen dataclasses whose fingerprint is stored in the database.

Signatures made under one set of settings cannot be compared with signatures made under
another, so a database remembers the settings that signed it (the *manifest*) and refuses
to mix them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import xxhash

#: Bumped whenever normalisation or tokenisation changes what a text turns into.
NORMALISER_VERSION = "nfkc-casefold-quotes-dashes/1"
TOKENISER_VERSION = "unicode-words-cjk-bigrams/1"


#: See :attr:`Settings.lone_band_bucket_max`.
LONE_BAND_BUCKET_MAX = 10


@dataclass(frozen=True)
class SketchSettings:
    """MinHash and LSH banding for one granularity (documents or passages)."""

    shingle_size: int
    num_perm: int = 128
    seed: int = 1
    lsh_threshold: float = 0.8
    #: Weight of false negatives when choosing bands x rows (datasketch's ``weights``): a
    #: candidate is verified exactly afterwards, so a missed pair costs more than a spare one.
    recall_weight: float = 0.5
    bands: int = 0
    rows: int = 0

    def __post_init__(self) -> None:
        if self.shingle_size < 1:
            raise ValueError(f"shingle size must be at least 1, got {self.shingle_size}")
        if self.num_perm < 8:
            raise ValueError(f"num_perm must be at least 8, got {self.num_perm}")
        if not 0.0 < self.lsh_threshold < 1.0:
            raise ValueError(f"LSH threshold must be between 0 and 1, got {self.lsh_threshold}")
        if not self.bands or not self.rows:
            from datasketch import MinHashLSH

            lsh = MinHashLSH(
                threshold=self.lsh_threshold,
                num_perm=self.num_perm,
                weights=(1.0 - self.recall_weight, self.recall_weight),
            )
            object.__setattr__(self, "bands", lsh.b)
            object.__setattr__(self, "rows", lsh.r)
        if self.bands * self.rows > self.num_perm:
            raise ValueError(
                f"bands x rows ({self.bands} x {self.rows}) exceeds num_perm {self.num_perm}"
            )

    def candidate_probability(self, similarity: float) -> float:
        """Probability that a pair at ``similarity`` shares at least one band (becomes a candidate)."""
        return 1.0 - (1.0 - similarity**self.rows) ** self.bands


@dataclass(frozen=True)
class Settings:
    """Everything that decides what a signature or a passage is.

    Thresholds used only when *reading* (report --threshold) are not part of it: they can
    change from one query to the next without re-signing anything.
    """

    #: Bands x rows are written out (they are what datasketch's MinHashLSH picks for these
    #: thresholds and weights; a test checks it), so that making the default settings does
    #: not import datasketch and scipy. Documents: every candidate is verified exactly (see
    #: provenance.index.index_document), so the bands favour recall: 21 x 6 makes a pair at
    #: Jaccard 0.8 a candidate with probability 0.998 (16 x 8 missed one in twenty).
    document: SketchSettings = field(
        default_factory=lambda: SketchSettings(shingle_size=5, recall_weight=0.999, bands=21, rows=6)
    )
    #: Passages are sketched over content-word sets, so rewording keeps them comparable.
    #: A low threshold (0.3: 37 bands of 3 rows) finds reworded passages; 0.4 (32 x 4) gives
    #: ten times fewer chance candidates but PAN 2013 plagdet fell from 0.798 to 0.788.
    passage: SketchSettings = field(
        default_factory=lambda: SketchSettings(shingle_size=1, lsh_threshold=0.3, num_perm=128, bands=37, rows=3)
    )
    normaliser: str = NORMALISER_VERSION
    tokeniser: str = TOKENISER_VERSION
    #: Opt-in: compare Cyrillic/Greek and Latin spellings of names as equal
    #: ("Lukashenko" / "Lukashenka" / "Лукашенко") by transliterating and keying on consonants.
    transliterate: bool = False
    hash_function: str = "xxh3_64-low32"
    minhash: str = "datasketch-affine32"
    #: A passage whose normalised form occurs in this many distinct documents is boilerplate.
    boilerplate_min_documents: int = 3
    #: Longer passages are never learned as boilerplate: a long passage that recurs is
    #: reused text (a quoted lead, a wire paragraph), not page chrome. Mark a long footer
    #: by hand with ``provenance boilerplate add``.
    boilerplate_max_words: int = 15
    #: Documents this similar count as one when counting where a passage recurs.
    boilerplate_family_similarity: float = 0.5
    #: Passages with fewer content words are kept and tagged but not matched.
    passage_min_words: int = 6
    #: Sentences are grouped into windows of at most this many words.
    passage_max_words: int = 60
    #: An LSH bucket holding more entries than this is skipped when looking up candidates:
    #: such a bucket is a template or boilerplate signal, and would make lookups quadratic.
    bucket_cap: int = 1000
    #: Two passages that share one band, and only one, through a bucket holding more than
    #: this many other passages are not candidates (0: they are). Such a bucket is made of
    #: common words, and a lone band shared there is nearly always chance: at 100,000 stored,
    #: about 94% of 20 new documents' candidate pairs, and 1 of their 149 pairs that earned a
    #: label (bench/candidates.py). Pairs that share two bands or more, such as every copy of
    #: a syndicated passage, are candidates however busy the buckets. Databases signed
    #: before this setting existed keep 0; those signed while its default was 50 keep 50.
    lone_band_bucket_max: int = LONE_BAND_BUCKET_MAX
    #: Documents at or above this estimated Jaccard are near-duplicates (report can raise it).
    near_duplicate_threshold: float = 0.8
    #: Passage grading thresholds (see provenance.match.MatchPolicy).
    syndicated_min_containment: float = 0.5
    rewritten_min_overlap: float = 0.6
    rewritten_min_shared: int = 6
    #: Seed and extend: around a matched passage, neighbours (this many passages away)
    #: are compared under looser thresholds, to follow reuse through heavy edits.
    extension_window: int = 2
    extension_min_containment: float = 0.4
    extension_min_overlap: float = 0.4
    extension_min_shared: int = 3
    #: Alignment of copied text: shared word 3-grams closer than this many words in both
    #: texts belong to one segment; a segment needs this many seeds.
    alignment_gap: int = 25
    alignment_min_seeds: int = 4
    alignment_standalone_seeds: int = 12
    #: A reworded passage alone needs this content-word overlap; next to other reuse (within
    #: this many characters) the ordinary threshold is enough.
    rewrite_standalone_overlap: float = 0.8
    rewrite_neighbour_chars: int = 400
    #: A derivation needs matched passages holding at least this many content words.
    derivation_min_content_words: int = 10

    def __post_init__(self) -> None:
        if self.lone_band_bucket_max < 0:
            raise ValueError(f"lone_band_bucket_max must be 0 (no limit) or more, got {self.lone_band_bucket_max}")

    def match_policy(self):
        from .match import MatchPolicy

        return MatchPolicy(
            syndicated_min_containment=self.syndicated_min_containment,
            rewritten_min_overlap=self.rewritten_min_overlap,
            rewritten_min_shared=self.rewritten_min_shared,
            min_content_words=self.passage_min_words,
        )

    def extension_policy(self):
        from .match import MatchPolicy

        return MatchPolicy(
            syndicated_min_containment=self.extension_min_containment,
            rewritten_min_overlap=self.extension_min_overlap,
            rewritten_min_shared=self.extension_min_shared,
            min_content_words=1,
        )

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))

    def fingerprint(self) -> str:
        return xxhash.xxh3_64_hexdigest(self.to_json().encode())

    @classmethod
    def from_json(cls, text: str) -> "Settings":
        data = json.loads(text)
        data["document"] = SketchSettings(**data["document"])
        data["passage"] = SketchSettings(**data["passage"])
        data.setdefault("lone_band_bucket_max", 0)  # signed before it existed: every lone band counts
        return cls(**data)

    def differences(self, other: "Settings") -> list[str]:
        """Human-readable list of settings that differ (``name: self != other``)."""
        mine, theirs = _flatten(self.as_dict()), _flatten(other.as_dict())
        return [
            f"{key}: {mine.get(key)!r} != {theirs.get(key)!r}"
            for key in sorted(set(mine) | set(theirs))
            if mine.get(key) != theirs.get(key)
        ]


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
