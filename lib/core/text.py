"""Evaluation sentences, the text normalisation used for WER, and splitting of long input."""
from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path


DATA_DIR = Path(__file__).resolve().parents[1] / "data"  # lib/data: the shipped data files
HARVARD_PATH = DATA_DIR / "harvard_sentences.txt"
HARVARD_LISTS = 72
SENTENCES_PER_LIST = 10


@dataclass(frozen=True)
class Sentence:
    id: str
    text: str


class TextError(ValueError):
    """Input text that cannot be spoken; the message names the text and the reason."""


def harvard_sentences(lists: list[int] | None = None) -> list[Sentence]:
    """The Harvard sentences of the given 1-based lists (all 72 when None), ids like `h03_07`."""
    lines = [ln.strip() for ln in HARVARD_PATH.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if len(lines) != HARVARD_LISTS * SENTENCES_PER_LIST:
        raise RuntimeError(f"{HARVARD_PATH} has {len(lines)} sentences, expected 720")
    wanted = range(1, HARVARD_LISTS + 1) if lists is None else lists
    out = []
    for li in wanted:
        if not isinstance(li, int) or not 1 <= li <= HARVARD_LISTS:
            raise ValueError(f"Harvard list {li!r} does not exist: lists are numbered 1..{HARVARD_LISTS}")
        for j in range(SENTENCES_PER_LIST):
            out.append(Sentence(f"h{li:02d}_{j + 1:02d}", lines[(li - 1) * SENTENCES_PER_LIST + j]))
    return out


def screen_and_confirmation(lists: list[int], screen: int, confirm: int) -> tuple[list[Sentence], list[Sentence]]:
    """The Harvard sentences of `lists` split for screen-then-confirm: the first `screen` (0: all, and then none is
    left to confirm on) and the next `confirm`, which the screen does not judge."""
    harvard = harvard_sentences(lists)
    if screen and confirm and len(harvard) < screen + confirm:
        raise ValueError(f"Harvard lists {lists} hold {len(harvard)} sentences: too few to screen on {screen} and "
                         f"confirm on {confirm} more")
    return harvard[: screen or None], (harvard[screen: screen + confirm] if screen else [])


@functools.lru_cache(maxsize=1)
def _whisper_normalizer():
    """Whisper's EnglishTextNormalizer from transformers. Its British-to-American spelling map (normalizer.json in
    the Whisper tokenizer files) ships with no package here, so it runs with an empty map: the Harvard sentences are
    American English already."""
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer
    return EnglishTextNormalizer({})


def normalize_for_wer(text: str) -> str:
    """One normalisation for reference and hypothesis, the one Whisper's authors and the Open ASR Leaderboard score
    with (transformers' EnglishTextNormalizer): spelled-out numbers and currencies to digits ("eight dollars" and
    "$8" agree, so do "eighteen hundred" and "1800"), contractions expanded, punctuation dropped, lower case."""
    return " ".join(_whisper_normalizer()(unicodedata.normalize("NFKC", text)).split())


def _script_of(ch: str) -> str:
    name = unicodedata.name(ch, "UNKNOWN")
    return name.split(" ")[0]


MAX_INPUT_CHARS = 20_000  # about 20 minutes of speech; past it a caller gets a TextError, not an hour's wait
_SPACE_LIKE = set("\t\n\r\v\f\x85\u2028\u2029")
_REFUSED = {"Cc": "a control character", "Cs": "a lone surrogate", "Co": "a private-use character",
            "Cn": "an unassigned code point"}


def _describe(ch: str) -> str:
    name = unicodedata.name(ch, "") or {"Cc": "control"}.get(unicodedata.category(ch), "no name")
    return f"U+{ord(ch):04X} ({name})"


def clean_text(text: str, max_input_chars: int = MAX_INPUT_CHARS) -> str:
    """Text made safe for a phonemizer, or a TextError naming the first character that cannot be and its position.

    Line and paragraph breaks and other space-like controls become spaces; invisible format characters (zero-width
    spaces and joiners, bidi marks, soft hyphens, byte-order marks: Unicode category Cf) are dropped, since they
    carry no sound; other controls (C0/C1), lone surrogates, private-use and unassigned code points are refused,
    since nothing says how they should sound and they crash espeak-ng inside piper. Input longer than
    `max_input_chars` is refused before any work is done."""
    if not isinstance(text, str):
        raise TextError(f"text must be a string, got {type(text).__name__}")
    if len(text) > max_input_chars:
        raise TextError(f"text is {len(text):,} characters, over the limit of {max_input_chars:,} (max_input_chars): "
                        f"split it, or raise the limit: {text[:40]!r}...")
    out = []
    for i, ch in enumerate(text):
        if ch in _SPACE_LIKE:
            out.append(" ")
            continue
        cat = unicodedata.category(ch)
        if cat == "Cf":
            continue
        if cat in _REFUSED:
            context = text[max(0, i - 20):i + 20].encode("utf-8", "backslashreplace").decode("utf-8")
            raise TextError(f"text has {_REFUSED[cat]} {_describe(ch)} at position {i}, which cannot be spoken: "
                            f"remove it ({context!r})")
        out.append(" " if cat == "Zs" else ch)
    return "".join(out)


def check_speakable(text: str, latin_only: bool = True, max_input_chars: int = MAX_INPUT_CHARS) -> str:
    """Return `text` cleaned (see clean_text) and stripped, or raise TextError saying why it cannot be spoken by an
    English voice."""
    stripped = clean_text(text, max_input_chars).strip()
    if not stripped:
        raise TextError("text is empty or whitespace only")
    if not any(ch.isalnum() for ch in stripped):
        raise TextError(f"text has nothing speakable (no letters or digits): {stripped[:60]!r}")
    if latin_only:
        foreign = sorted({ch for ch in stripped if ch.isalpha() and not _script_of(ch) == "LATIN"})
        if foreign:
            scripts = sorted({_script_of(ch) for ch in foreign})
            raise TextError(
                f"text uses a non-Latin script ({', '.join(scripts)}: {''.join(foreign[:10])!r}) "
                f"that this English voice cannot speak: {stripped[:60]!r}")
    return stripped


_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


def split_sentences(text: str, max_chars: int = 300) -> list[str]:
    """Split text at sentence ends; pieces longer than `max_chars` are cut again at commas, then at spaces."""
    if max_chars < 20:
        raise ValueError(f"max_chars={max_chars} is too small to hold a phrase (minimum 20)")
    pieces: list[str] = []
    for sent in _SENTENCE_END.split(text.strip()):
        sent = " ".join(sent.split())
        if not sent:
            continue
        pieces.extend(_cut(sent, max_chars))
    return pieces


def _cut(sent: str, max_chars: int) -> list[str]:
    if len(sent) <= max_chars:
        return [sent]
    for pattern in (r"(?<=,)\s+", r"\s+"):
        parts, cur = [], ""
        for tok in re.split(pattern, sent):
            cand = f"{cur} {tok}" if cur else tok
            if len(cand) <= max_chars:
                cur = cand
            else:
                if cur:
                    parts.append(cur)
                cur = tok
        if cur:
            parts.append(cur)
        if all(len(p) <= max_chars for p in parts):
            return parts
    return [sent[i:i + max_chars] for i in range(0, len(sent), max_chars)]
