"""Rebuild the clean speech pack shipped in ``dereverb/assets/speech`` from Debian packages.

Real recordings come first: the Asterisk core sounds in G.722 (16 kHz; Allison Smith in US English
and Mexican Spanish, June Wallack in Canadian French) and the 8 kHz GSM prompt packages
(July E. Jiménez in Colombian Spanish, Armelle Desjardins in French). All of them are female voices,
so two male voices of the Flite synthesiser (``awb``, ``rms``, 16 kHz; the extracted binary needs the
system's ``libasound2``), reading the English transcripts of the same prompts, are added and
marked ``kind=synthetic`` in the manifest.

Only the packages of ``ALLOWED`` are ever downloaded (English, Spanish and French voices, Flite): the
other Asterisk languages and room simulators are reserved for independent evaluation, and the
script refuses any package outside that list.

Steps: ``apt-get download`` the ``.deb`` files into a cache (default ``~/.cache/dereverb/speech-pack``),
record name, version and sha256 of each, extract them with ``dpkg-deb -x``, decode (G.722 with the
``G722`` package, GSM 6.10 with libsndfile, TTS with the extracted ``flite`` binary), drop near-silent
files and clips shorter than ``MIN_DURATION_S``, trim leading/trailing silence and shorten long
internal pauses, choose files with a fixed seed so that the pack fits ``--max-mb`` while keeping the
voices' minutes balanced, split by prompt into train/valid/test, and write FLAC (16-bit PCM, native
rate), ``manifest.csv``, ``ATTRIBUTION.md`` and ``README.md``.

Example:
    pip install -e ".[pack]"
    python scripts/build_speech_pack.py --out dereverb/assets/speech
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import heapq
import io
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from dereverb.data.speech_pack import format_summary, pack_summary
from dereverb.errors import DataError

log = logging.getLogger("build_speech_pack")

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "dereverb" / "assets" / "speech"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dereverb" / "speech-pack"

# The only packages the pack may come from; everything else (other languages, room simulators) is
# reserved for independent evaluation: never downloaded, never read.
ALLOWED = re.compile(r"^(asterisk-(core-sounds|prompt)-(en|es|fr)(-[a-z0-9]+)*|flite|libflite1)$")

TRANSCRIPTS_PACKAGE = "asterisk-core-sounds-en"  # core-sounds-en.txt: prompt name -> English text
TRANSCRIPTS_FILE = "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
FLITE_PACKAGES = ("flite", "libflite1")

FRAME_S = 0.010  # analysis frame for the silence detector
SILENCE_REL_DB = 35.0  # a frame is silent when 35 dB below the loudest frame of the file ...
SILENCE_ABS_DBFS = -55.0  # ... or below -55 dBFS
NEAR_SILENT_DBFS = -35.0  # drop a file whose loudest frame is below this
EDGE_PAD_S = 0.10  # silence kept before the first and after the last active frame
MAX_PAUSE_S = 0.40  # internal pauses longer than this ...
KEPT_PAUSE_S = 0.25  # ... are shortened to this
MIN_DURATION_S = 1.0  # shorter clips (single digits, letters) are dropped
RESERVED_BYTES = 400_000  # budget kept for manifest.csv, ATTRIBUTION.md and README.md
SPLIT_SHARE = {"valid": 0.12, "test": 0.12}  # of the pack's minutes; train gets the rest
MIN_SPLIT_S = 210.0  # valid and test get at least 3.5 minutes each
OVERSHOOT = 1.2  # a split may exceed its target by 20 % at most
SYNTHETIC_WEIGHT = 0.5  # a synthetic voice gets half the minutes of a real one


@dataclass(frozen=True)
class Voice:
    """One voice of the pack: where its files come from and who speaks."""

    id: str  # folder name in the pack
    speaker: str  # the same person recorded in two languages shares one speaker
    sex: str
    language: str
    kind: str  # real | synthetic
    package: str  # Debian package holding the audio
    codec: str  # g722 | gsm | flite
    root: str  # folder inside the package (g722/gsm), or the flite voice name
    credit: str
    weight: float = 1.0  # share of the budget relative to a real voice


VOICES = (
    Voice(
        id="allison-en", speaker="allison", sex="female", language="en-US", kind="real",
        package="asterisk-core-sounds-en-g722", codec="g722", root="usr/share/asterisk/sounds/en_US_f_Allison",
        credit="Allison Smith (recorded for Digium, Inc.)",
    ),
    Voice(
        id="allison-es", speaker="allison", sex="female", language="es-MX", kind="real",
        package="asterisk-core-sounds-es-g722", codec="g722", root="usr/share/asterisk/sounds/es_MX_f_Allison",
        credit="Allison Smith (recorded for Digium, Inc.)",
    ),
    Voice(
        id="june-fr", speaker="june", sex="female", language="fr-CA", kind="real",
        package="asterisk-core-sounds-fr-g722", codec="g722", root="usr/share/asterisk/sounds/fr_CA_f_June",
        credit="June Wallack; French translation by Clod Patry, Kristopher Lalletti and June Wallack",
    ),
    Voice(
        id="july-es", speaker="july", sex="female", language="es-CO", kind="real",
        package="asterisk-prompt-es-co", codec="gsm", root="usr/share/asterisk/sounds/es",
        credit="July E. Jiménez, recorded by Avatar Ltda.",
    ),
    Voice(
        id="armelle-fr", speaker="armelle", sex="female", language="fr-FR", kind="real",
        package="asterisk-prompt-fr-armelle", codec="gsm", root="usr/share/asterisk/sounds/fr",
        credit="Armelle Desjardins (voice actor), Michel Gutierrez (copyright holder)",
    ),
    Voice(
        id="flite-awb", speaker="flite-awb", sex="male", language="en-GB", kind="synthetic",
        package="flite", codec="flite", root="awb", weight=SYNTHETIC_WEIGHT,
        credit="Flite cmu_us_awb voice (Carnegie Mellon University) reading the Asterisk English transcripts",
    ),
    Voice(
        id="flite-rms", speaker="flite-rms", sex="male", language="en-US", kind="synthetic",
        package="flite", codec="flite", root="rms", weight=SYNTHETIC_WEIGHT,
        credit="Flite cmu_us_rms voice (Carnegie Mellon University) reading the Asterisk English transcripts",
    ),
)  # fmt: skip


@dataclass(frozen=True)
class Deb:
    """A downloaded Debian package."""

    name: str
    version: str
    sha256: str
    path: Path
    root: Path  # where it was extracted


@dataclass
class Clip:
    """One trimmed recording, encoded and ready to be written."""

    voice: Voice
    prompt: str
    origin: str  # file inside the package, or "tts:<prompt>" for a synthetic voice
    sample_rate: int
    num_samples: int
    flac: bytes
    split: str = field(default="")

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate

    @property
    def stem(self) -> str:
        return self.prompt.replace("/", "_")


# ---------------------------------------------------------------------------------------------- packages


def _run(cmd: list[str], what: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    try:
        out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError as err:
        raise DataError(f"{what}: '{cmd[0]}' not found (a Debian/Ubuntu machine with apt is needed)") from err
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no message"])[-1]
        raise DataError(f"{what}: {' '.join(cmd)} failed: {last}")
    return out.stdout


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_package(name: str, cache: Path) -> Deb:
    """Download (once) and extract one Debian package; check its sha256 against apt's index."""
    if not ALLOWED.match(name):
        raise DataError(f"{name}: not a source of the speech pack (English, Spanish or French voices, Flite); "
                        "refusing to download it")  # fmt: skip
    fields = {}
    for line in _run(["apt-cache", "show", "--no-all-versions", name], f"{name}: not in the apt index").splitlines():
        key, _, value = line.partition(": ")
        if key in ("Version", "Architecture", "SHA256") and key not in fields:
            fields[key] = value.strip()
    if "Version" not in fields:
        raise DataError(f"{name}: apt-cache knows no version of it (run 'apt-get update')")
    version, arch = fields["Version"], fields.get("Architecture", "all")
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    path = debs / f"{name}_{version.replace(':', '%3a')}_{arch}.deb"
    if not path.exists():
        log.info("downloading %s %s", name, version)
        _run(["apt-get", "download", f"{name}={version}"], f"{name}: cannot download", cwd=debs)
        if not path.exists():
            raise DataError(f"{name}: apt-get download did not produce {path.name}")
    sha = _sha256(path)
    if "SHA256" in fields and fields["SHA256"] != sha:
        raise DataError(f"{path}: sha256 {sha} differs from apt's {fields['SHA256']} (delete it and rerun)")
    root = cache / "extract" / path.stem
    if not (root / ".done").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        _run(["dpkg-deb", "-x", str(path), str(root)], f"{path}: cannot extract")
        (root / ".done").touch()
    return Deb(name, version, sha, path, root)


def copyright_text(deb: Deb) -> str:
    """The package's ``/usr/share/doc/<name>/copyright`` file."""
    path = deb.root / "usr" / "share" / "doc" / deb.name / "copyright"
    if not path.exists():
        raise DataError(f"{deb.name}: no copyright file in the package ({path})")
    return path.read_text(encoding="utf-8", errors="replace")


def read_transcripts(deb: Deb) -> dict[str, str]:
    """Prompt name -> English text, from ``core-sounds-en.txt``."""
    path = deb.root / TRANSCRIPTS_FILE
    if not path.exists():
        raise DataError(f"{path}: transcripts missing from {deb.name}")
    out = {}
    for line in gzip.open(path, "rt", encoding="utf-8", errors="replace"):
        name, sep, text = line.partition(":")
        if sep and not line.startswith(";"):
            out[name.strip()] = text.strip()
    return out


# ---------------------------------------------------------------------------------------------- audio


def decode_g722(path: Path) -> tuple[np.ndarray, int]:
    """Decode a raw 64 kbit/s G.722 file (fresh decoder state per file) to int16 at 16 kHz."""
    try:
        import G722  # the 'pack' extra
    except ImportError as err:
        raise DataError("the G722 decoder is missing: pip install -e '.[pack]'") from err
    return np.asarray(G722.G722(16000, 64000).decode(path.read_bytes()), dtype=np.int16), 16000


def decode_gsm(path: Path) -> tuple[np.ndarray, int]:
    """Decode a raw GSM 6.10 file (8 kHz) with libsndfile."""
    try:
        x, sr = sf.read(path, format="RAW", subtype="GSM610", samplerate=8000, channels=1, dtype="int16")
    except (RuntimeError, sf.LibsndfileError) as err:
        raise DataError(f"{path}: cannot decode GSM 6.10: {err}") from err
    return x, sr


def synthesize(flite: Path, lib: Path, voice: str, text: str) -> tuple[np.ndarray, int]:
    """Read ``text`` with the extracted flite binary."""
    env = dict(os.environ, LD_LIBRARY_PATH=str(lib))
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "tts.wav"
        _run([str(flite), "-voice", voice, "-t", text, "-o", str(wav)], f"flite voice {voice}", env=env)
        x, sr = sf.read(wav, dtype="int16")
    return x, sr


def trim(x: np.ndarray, sr: int) -> np.ndarray | None:
    """Cut leading/trailing silence and shorten long internal pauses.

    Returns None for a near-silent file or one shorter than ``MIN_DURATION_S`` once trimmed.
    """
    hop = round(FRAME_S * sr)
    n = len(x) // hop
    if n == 0:
        return None
    frames = x[: n * hop].astype(np.float64).reshape(n, hop) / 32768.0
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    if db.max() < NEAR_SILENT_DBFS:
        return None
    active = db > max(db.max() - SILENCE_REL_DB, SILENCE_ABS_DBFS)
    idx = np.flatnonzero(active)
    pad, max_pause, kept = round(EDGE_PAD_S / FRAME_S), round(MAX_PAUSE_S / FRAME_S), round(KEPT_PAUSE_S / FRAME_S)
    keep = np.zeros(n, dtype=bool)
    keep[max(idx[0] - pad, 0) : min(idx[-1] + pad + 1, n)] = True
    gaps = np.flatnonzero(np.diff(idx) > max_pause)
    for g in gaps:  # silent frames idx[g]+1 .. idx[g+1]-1: keep kept/2 frames at each end
        keep[idx[g] + 1 + kept // 2 : idx[g + 1] - (kept - kept // 2)] = False
    y = x[: n * hop].reshape(n, hop)[keep].reshape(-1)
    return y if len(y) >= MIN_DURATION_S * sr else None


def encode_flac(x: np.ndarray, sr: int) -> bytes:
    """16-bit PCM FLAC at the highest compression level (deterministic for a given libsndfile)."""
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="FLAC", subtype="PCM_16", compression_level=1.0)
    return buf.getvalue()


def load_voice(
    voice: Voice, deb: Deb, transcripts: dict[str, str], flite: tuple[Path, Path] | None
) -> tuple[list[Clip], int]:
    """All usable clips of one voice, and how many files were dropped (tones, silences, near-silent, short)."""
    skip = {name for name, text in transcripts.items() if text.startswith("[")}  # tones, monkeys
    if voice.codec == "flite":
        if flite is None:
            raise DataError(f"{voice.id}: the flite binary is needed")
        candidates = len(transcripts)
        items = [(name, f"tts:{name}") for name in sorted(transcripts) if name not in skip]
    else:
        root = deb.root / voice.root
        suffix = "." + voice.codec
        files = sorted(p for p in root.rglob("*" + suffix) if p.is_file())
        if not files:
            raise DataError(f"{root}: no {suffix} files in {deb.name}")
        candidates = len(files)
        items = [(p.relative_to(root).with_suffix("").as_posix(), p.relative_to(deb.root).as_posix()) for p in files]
        items = [
            (prompt, origin) for prompt, origin in items if prompt not in skip and not prompt.startswith("silence/")
        ]
    clips, dropped = [], candidates - len(items)
    for prompt, origin in tqdm(items, desc=voice.id, unit="file", leave=False):
        if voice.codec == "g722":
            x, sr = decode_g722(deb.root / origin)
        elif voice.codec == "gsm":
            x, sr = decode_gsm(deb.root / origin)
        else:
            text = re.sub(r"\[[^\]]*\]", " ", transcripts[prompt]).strip()
            x, sr = synthesize(*flite, voice.root, text)
        y = trim(x, sr)
        if y is None:
            dropped += 1
            continue
        clips.append(Clip(voice, prompt, origin, sr, len(y), encode_flac(y, sr)))
    return clips, dropped


# ---------------------------------------------------------------------------------------------- selection


def select(clips: list[Clip], budget: int, seed: int) -> list[Clip]:
    """Fill ``budget`` bytes, always adding to the voice with the fewest minutes per weight."""
    rng = random.Random(seed)
    queues: dict[str, list[Clip]] = {}
    for c in clips:
        queues.setdefault(c.voice.id, []).append(c)
    for vid in sorted(queues):
        rng.shuffle(queues[vid])
    weight = {c.voice.id: c.voice.weight for c in clips}
    heap = [(0.0, vid) for vid in sorted(queues)]
    chosen, used = [], 0
    while heap:
        seconds, vid = heapq.heappop(heap)
        queue = queues[vid]
        while queue and used + len(queue[0].flac) > budget:
            queue.pop(0)  # does not fit any more: try this voice's next clip
        if not queue:
            continue
        clip = queue.pop(0)
        chosen.append(clip)
        used += len(clip.flac)
        heapq.heappush(heap, (seconds + clip.duration_s / weight[vid], vid))
    return chosen


def assign_splits(clips: list[Clip], seed: int) -> None:
    """Give every prompt one split: valid and test get their share of minutes and every speaker."""
    by_prompt: dict[str, list[Clip]] = {}
    for c in clips:
        by_prompt.setdefault(c.prompt, []).append(c)
    remaining = sorted(by_prompt)
    random.Random(seed + 1).shuffle(remaining)
    speakers = {c.voice.speaker for c in clips}
    total = sum(c.duration_s for c in clips)
    for split, share in SPLIT_SHARE.items():
        target, taken = max(share * total, MIN_SPLIT_S), []
        seconds = 0.0
        for prompt in remaining:  # in seeded order until the split has its minutes ...
            group = sum(c.duration_s for c in by_prompt[prompt])
            if seconds >= target:
                break
            if seconds + group <= OVERSHOOT * target:  # skip prompts too long to fit (long menus)
                taken.append(prompt)
                seconds += group
        for speaker in sorted(speakers):  # ... then one more prompt for each speaker still missing
            if not any(c.voice.speaker == speaker for p in taken for c in by_prompt[p]):
                extra = next(
                    (p for p in remaining if p not in taken and speaker in {c.voice.speaker for c in by_prompt[p]}),
                    None,
                )
                if extra is None:
                    raise DataError(f"split {split}: no prompt of speaker {speaker} is left for it")
                taken.append(extra)
        for prompt in taken:
            for c in by_prompt[prompt]:
                c.split = split
        remaining = [p for p in remaining if p not in set(taken)]
    for prompt in remaining:
        for c in by_prompt[prompt]:
            c.split = "train"


# ---------------------------------------------------------------------------------------------- output


MANIFEST_FIELDS = (
    "id", "path", "speaker", "sex", "language", "kind", "source", "prompt", "sample_rate",
    "num_samples", "duration_s", "split", "sha256", "origin",
)  # fmt: skip


def write_pack(out: Path, clips: list[Clip], debs: dict[str, Deb], dropped: dict[str, int], seed: int) -> None:
    """Write the FLAC files, ``manifest.csv``, ``ATTRIBUTION.md`` and ``README.md`` into ``out``."""
    for vdir in {c.voice.id for c in clips}:
        shutil.rmtree(out / vdir, ignore_errors=True)
    for old in ("manifest.csv", "ATTRIBUTION.md", "README.md"):
        (out / old).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    clips = sorted(clips, key=lambda c: (c.voice.id, c.prompt))
    rows = []
    for c in clips:
        rel = f"{c.voice.id}/{c.stem}.flac"
        (out / c.voice.id).mkdir(exist_ok=True)
        (out / rel).write_bytes(c.flac)
        deb = debs[c.voice.package]
        rows.append({
            "id": f"{c.voice.id}_{c.stem}", "path": rel, "speaker": c.voice.speaker, "sex": c.voice.sex,
            "language": c.voice.language, "kind": c.voice.kind, "source": f"{deb.name}={deb.version}",
            "prompt": c.prompt, "sample_rate": c.sample_rate, "num_samples": c.num_samples,
            "duration_s": f"{c.duration_s:.6f}", "split": c.split, "sha256": hashlib.sha256(c.flac).hexdigest(),
            "origin": c.origin,
        })  # fmt: skip
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    (out / "ATTRIBUTION.md").write_text(attribution(clips, debs, dropped, seed), encoding="utf-8")
    (out / "README.md").write_text(readme(), encoding="utf-8")


def attribution(clips: list[Clip], debs: dict[str, Deb], dropped: dict[str, int], seed: int) -> str:
    """Per source package: voice, credit, licence (verbatim copyright file), files taken, .deb checksum."""
    lines = [
        "# Attribution and licences of the speech pack",
        "",
        "Every FLAC file of this pack is a modified excerpt of a recording (or, for `kind=synthetic`, a",
        "synthesis) taken from the Debian packages below. The modifications: decoding (G.722 with the PyPI",
        "`G722` package, GSM 6.10 with libsndfile), trimming of leading/trailing silence, shortening of",
        f"internal pauses longer than {MAX_PAUSE_S} s to {KEPT_PAUSE_S} s, and storage as 16-bit FLAC at the",
        "original sample rate. `manifest.csv` names, for every file, its source package and version",
        "(`source`) and the file inside that package it was made from (`origin`).",
        "",
        f"Rebuilt by `scripts/build_speech_pack.py --seed {seed}`, which downloads English, Spanish and",
        "French voices and Flite only (other voices are reserved for independent evaluation).",
        "",
        "Each file keeps the licence of its source package (CC-BY-SA-3.0 for the Asterisk core sounds,",
        "GPL-2 for `asterisk-prompt-es-co`, the BSD-style licence of `asterisk-prompt-fr-armelle`; for the",
        "synthetic voices the CC-BY-SA-3.0 transcripts and Flite's BSD-style licence), as quoted below.",
        "",
        "Files dropped: tones and silences (by name), near-silent files, and clips shorter than",
        f"{MIN_DURATION_S} s once trimmed. The other usable files not in the pack were left out by the",
        "seeded selection that keeps the pack under its size limit.",
        "",
        "| package | version | sha256 of the .deb | used for | files in pack | files dropped |",
        "|---|---|---|---|---|---|",
    ]
    used = {}
    for c in clips:
        used.setdefault(c.voice.package, []).append(c)
    for name in sorted(debs):
        deb = debs[name]
        voices = sorted({c.voice.id for c in used.get(name, [])})
        if name == TRANSCRIPTS_PACKAGE:
            role = "English transcripts read by the synthetic voices"
        elif name == "libflite1":
            role = "Flite voices (shared libraries) for the synthetic voices"
        else:
            role = ", ".join(voices)
        n_drop = sum(dropped.get(v, 0) for v in voices)
        lines.append(f"| `{name}` | {deb.version} | `{deb.sha256}` | {role} | {len(used.get(name, []))} | {n_drop} |")
    lines += ["", "## Voices", ""]
    for v in VOICES:
        lines.append(f"- `{v.id}` ({v.kind}, {v.sex}, {v.language}): {v.credit}; package `{v.package}`.")
    lines += [
        "",
        "The synthetic voices read the text of `core-sounds-en.txt` (package "
        f"`{TRANSCRIPTS_PACKAGE}`, same licence as the Asterisk core sounds, CC-BY-SA-3.0) with the",
        "Flite voices of packages `flite`/`libflite1` (Carnegie Mellon University, BSD-style licence below).",
        "",
    ]
    for name in sorted(debs):
        lines += [f"## `{name}` {debs[name].version}: copyright file", "", "```", copyright_text(debs[name]).rstrip()]
        lines += ["```", ""]
    return "\n".join(lines)


def readme() -> str:
    return """# Clean speech pack

Short clean speech recordings for training and testing dereverberation: real telephone-prompt voices
(Asterisk sound packages) plus two synthetic male voices (Flite), stored losslessly as 16-bit FLAC at
each source's native rate (16 kHz for G.722 and Flite, 8 kHz for the GSM prompt packages).

- `manifest.csv`: one row per file: `id, path` (relative to this folder), `speaker, sex, language,
  kind` (real|synthetic), `source` (Debian package=version), `prompt, sample_rate, num_samples,
  duration_s, split, sha256, origin` (file inside the package).
- Splits are by prompt: the same prompt name (e.g. `vm-goodbye`), in any voice or language, is in one
  split only. `valid` and `test` cover every speaker.
- `ATTRIBUTION.md`: licences (CC-BY-SA-3.0, GPL-2, BSD-style), credits, package versions and checksums.

Figures (speakers, minutes per split, size) are printed by

```bash
python -m dereverb.data.speech_pack
```

and the pack is rebuilt, byte for byte, from the Debian archive by

```bash
pip install -e ".[pack]" && python scripts/build_speech_pack.py
```

`from dereverb.data.speech_pack import load_manifest, verify_pack` gives the rows with absolute
paths and checks every file's sha256.
"""


# ---------------------------------------------------------------------------------------------- main


def build(out: Path, cache: Path, max_mb: float, seed: int) -> list[Clip]:
    """Download, decode, select and write the pack; returns the clips written."""
    names = sorted({v.package for v in VOICES} | {TRANSCRIPTS_PACKAGE, *FLITE_PACKAGES})
    debs = {name: fetch_package(name, cache) for name in tqdm(names, desc="packages", unit="deb")}
    transcripts = read_transcripts(debs[TRANSCRIPTS_PACKAGE])
    lib = next((p.parent for p in sorted(debs["libflite1"].root.rglob("libflite.so*"))), None)
    if lib is None:
        raise DataError(f"{debs['libflite1'].path}: no libflite.so inside")
    flite = (debs["flite"].root / "usr" / "bin" / "flite", lib)

    clips, dropped = [], {}
    for voice in VOICES:
        mine, dropped[voice.id] = load_voice(voice, debs[voice.package], transcripts, flite)
        log.info("%s: %d usable clips (%.1f min), %d dropped", voice.id, len(mine),
                 sum(c.duration_s for c in mine) / 60, dropped[voice.id])  # fmt: skip
        clips += mine

    budget = int(max_mb * 1e6) - RESERVED_BYTES
    chosen = select(clips, budget, seed)
    assign_splits(chosen, seed)
    write_pack(out, chosen, debs, dropped, seed)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    if size > max_mb * 1e6:
        raise DataError(f"{out}: {size / 1e6:.2f} MB exceeds --max-mb {max_mb}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="pack folder (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=".deb cache (default: %(default)s)")
    parser.add_argument("--max-mb", type=float, default=39.5, help="size limit of the pack, 10^6 bytes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the file selection and the splits")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        clips = build(args.out, args.cache, args.max_mb, args.seed)
    except (DataError, OSError) as err:  # one line, e.g. a package that cannot be downloaded
        log.error("%s", err)
        return 1
    for voice in VOICES:
        mine = [c for c in clips if c.voice.id == voice.id]
        log.info("%s in the pack: %d files, %.1f min", voice.id, len(mine), sum(c.duration_s for c in mine) / 60)
    print(format_summary(pack_summary(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
