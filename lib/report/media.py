"""The report's media: clips embedded as data URLs, a notebook's figures and clips found under outputs/, and the
HTML made to work offline (`make_offline`, which `tts-lab run` calls)."""
from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

from lib.core.results import OUTPUTS


CLIP_RATE = 16000  # embedded clips: 16 kHz Ogg Opus, a tenth of 16-bit WAV, so the page stays within its size budget


def clip_data_url(wav: Path, max_s: float = 8.0, rate: int = CLIP_RATE) -> str:
    """The first `max_s` seconds of a clip as a data URL of 16 kHz Ogg Opus (libsndfile's encoder, which every
    current browser plays): embedded, so the page works when moved or offline."""
    import soundfile as sf
    from lib.core.audio import read_wav, resample
    audio, sr = read_wav(wav)
    audio = resample(audio[: int(max_s * sr)], sr, rate)
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="OGG", subtype="OPUS")
    return "data:audio/ogg;codecs=opus;base64," + base64.b64encode(buf.getvalue()).decode()


def audio_tag(wav: Path, max_s: float = 4.0, label: str = "", link: str | None = None) -> str:
    """An <audio> element with the first `max_s` seconds embedded (`clip_data_url`); `link`, a relative path to
    the whole file, for the longer audio."""
    cap = f"<div style='font-size:90%'>{html.escape(label)}</div>" if label else ""
    if link:
        cap += f"<div style='font-size:80%'><a href='{html.escape(link)}'>whole clip (WAV)</a></div>"
    return (f"<figure style='display:inline-block;margin:4px 12px'>{cap}"
            f"<audio controls preload='metadata' src='{clip_data_url(wav, max_s)}'></audio></figure>")


def figures(profile: str, notebook: str, outputs: Path | None = None) -> list[Path]:
    return sorted((Path(outputs or OUTPUTS) / profile / notebook / "figures").glob("*.png"))


def clips(profile: str, notebook: str, per_variant: int = 1, outputs: Path | None = None) -> list[tuple[str, Path]]:
    """The first `per_variant` clips of each variant folder under <notebook>/audio/, the same sentence for all."""
    root = Path(outputs or OUTPUTS) / profile / notebook / "audio"
    folders = sorted(p for p in root.glob("*") if p.is_dir())
    if not folders:
        return []
    common = sorted(set.intersection(*[{w.name for w in f.glob("*.wav")} for f in folders]))[:per_variant]
    return [(f"{f.name.replace('__', ' on ')}: {name[:-4]}", f / name) for f in folders for name in common]


REMOTE_TAG = re.compile(r"""<(script|link)\b[^>]*(?:src|href)=["']https?://[^"']*["'][^>]*>(?:\s*</script>)?""", re.I)


def make_offline(html_path: Path) -> int:
    """Remove the tags nbconvert's template loads from a CDN (require.js, MathJax): the report uses neither, and
    offline they only fail. Returns how many were removed."""
    path = Path(html_path)
    text, n = REMOTE_TAG.subn("", path.read_text(encoding="utf-8"))
    if n:
        from lib.core.results import atomic_write_text
        atomic_write_text(path, text)
    return n
