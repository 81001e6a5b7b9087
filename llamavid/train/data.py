"""Training data: LLaVA-style JSON conversations over images, videos or pre-computed .vidtok features.

    [{"id": "...", "video": "clips/a.mp4",            # or "image": "...", or "vidtok": "..."
      "conversations": [{"from": "human", "value": "<image>\\nWhat color is the shape?"},
                        {"from": "gpt", "value": "red"}],
      "long": false}]                                   # optional: use the long-video (movie) prompt

Media paths are relative to ``media_root`` (default: the JSON file's folder). The vision encoder is
frozen in every stage, so each video is encoded once into a .vidtok in a feature cache before training.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset

from ..core.errors import InputError
from ..features.encode import EncodeOptions, encode_file, is_up_to_date
from ..features.vidtok import content_hash, open_vidtok
from ..media import subtitles as subs
from ..model.prompt import IMAGE_PLACEHOLDER
from ..model.vision import VisionEncoder
from ..pipeline.planning import uniform_indices

MEDIA_KEYS = ("vidtok", "video", "image")


@dataclass
class Sample:
    id: str
    media: Path | None
    turns: list[tuple[str, str]]  # (human text without the <image> marker, reply)
    long_video: bool = False
    extra: dict = field(default_factory=dict)


def load_samples(paths: Sequence[str | os.PathLike], media_root: str | os.PathLike | None = None) -> list[Sample]:
    """Read and check LLaVA-style JSON files; a malformed item is an error naming the file and the item."""
    samples: list[Sample] = []
    for json_path in map(Path, paths):
        try:
            items = json.loads(json_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{json_path}: no such file") from None
        except (OSError, ValueError) as exc:
            raise InputError(f"{json_path}: not readable JSON ({exc})") from None
        if not isinstance(items, list):
            raise InputError(f"{json_path}: expected a JSON list of conversations")
        root = Path(media_root) if media_root is not None else json_path.parent
        for index, item in enumerate(items):
            samples.append(_parse_item(item, index, json_path, root))
    if not samples:
        raise InputError(f"{', '.join(map(str, paths))}: no training samples")
    return samples


def _parse_item(item: object, index: int, json_path: Path, root: Path) -> Sample:
    where = f"{json_path}: item {index}"
    if not isinstance(item, dict):
        raise InputError(f"{where}: expected an object")
    convs = item.get("conversations")
    if not isinstance(convs, list) or len(convs) < 2 or len(convs) % 2:
        raise InputError(f"{where}: 'conversations' must alternate human and gpt turns")
    turns = []
    for k in range(0, len(convs), 2):
        human, gpt = convs[k], convs[k + 1]
        if not (isinstance(human, dict) and isinstance(gpt, dict) and human.get("from") == "human"
                and gpt.get("from") == "gpt"):
            raise InputError(f"{where}: turn {k // 2} is not a human turn followed by a gpt turn")
        question = str(human.get("value", "")).replace(IMAGE_PLACEHOLDER, "").strip()
        turns.append((question, str(gpt.get("value", "")).strip()))
    media_key = next((k for k in MEDIA_KEYS if item.get(k)), None)
    media = None
    if media_key is not None:
        media = Path(item[media_key])
        media = media if media.is_absolute() else root / media
        if not media.exists():
            raise InputError(f"{where}: {media_key} file {media} not found")
    return Sample(str(item.get("id", f"{json_path.name}:{index}")), media, turns, bool(item.get("long", False)),
                  {k: v for k, v in item.items() if k not in ("conversations", *MEDIA_KEYS)})


class FeatureStore:
    """Vision features per media file, as .vidtok files made once with the frozen encoder."""

    def __init__(self, cache_dir: str | os.PathLike, encoder: VisionEncoder | None, *, fps: float = 1.0):
        self.cache_dir = Path(cache_dir)
        self.encoder = encoder
        self.fps = fps
        self._hashes: dict[Path, str] = {}
        self._ready: set[Path] = set()  # media whose token file this store found up to date (or made)

    def _hash(self, media: Path) -> str:
        if media not in self._hashes:
            self._hashes[media] = content_hash(media)
        return self._hashes[media]

    def path_for(self, media: Path) -> Path:
        if media.suffix == ".vidtok":
            return media
        return self.cache_dir / f"{self._hash(media).split(':')[-1][:24]}-fps{self.fps:g}.vidtok"

    def prepare(self, media: Sequence[Path], *, on_progress: Callable[[int, int], None] | None = None) -> int:
        """Encode every media file that has no up-to-date token file yet; returns how many were encoded.

        A token file already up to date (checksums included: ``is_up_to_date``) is taken as it is, without
        probing the video (one ffprobe per file, which cost each stage of the demo recipe two minutes), and
        is not checked again by this store; anything else goes through ``encode_file`` (under its lock)."""
        todo = sorted({m for m in media if m.suffix != ".vidtok"} - self._ready)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        opts = EncodeOptions(fps=self.fps)
        encoded = 0
        for i, m in enumerate(todo):
            if self.encoder is None:
                raise InputError(f"{m}: needs encoding but no vision encoder was given")
            out = self.path_for(m)
            if not is_up_to_date(out, self._hash(m), self.encoder.identity(), opts.fps, opts.storage):
                result = encode_file(self.encoder, m, out, opts, source_hash=self._hash(m))
                encoded += result.status != "skipped"
            self._ready.add(m)
            if on_progress:
                on_progress(i + 1, len(todo))
        for m in media:
            if m.suffix == ".vidtok" and self.encoder is not None:
                with open_vidtok(m) as vt:
                    vt.check_encoder(self.encoder.identity()["fingerprint"])
        return encoded

    def timestamps(self, media: Path, max_frames: int | None = None) -> list[float]:
        """The times of the frames ``load`` gives."""
        with open_vidtok(self.path_for(media)) as vt:
            indices = uniform_indices(len(vt), max_frames) if max_frames else list(range(len(vt)))
            return [float(vt.timestamps[i]) for i in indices]

    def load(self, media: Path, max_frames: int | None = None) -> tuple[torch.Tensor, list[str]]:
        """(features (T, N, C) float16, per-frame subtitle text)."""
        with open_vidtok(self.path_for(media)) as vt:
            indices = uniform_indices(len(vt), max_frames) if max_frames else list(range(len(vt)))
            feats = vt.frames(indices, dtype=torch.float16) if max_frames else vt.features(dtype=torch.float16)
            times = [float(vt.timestamps[i]) for i in indices]
            lines = [subs.SubtitleLine(*line) for line in vt.subtitles]
        return feats, subs.attach_to_frames(lines, times)


class ConversationDataset(Dataset):
    """Samples with their features loaded (lazily, per item)."""

    def __init__(self, samples: list[Sample], store: FeatureStore, *, max_frames: int | None = None):
        self.samples = samples
        self.store = store
        self.max_frames = max_frames

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        sample = self.samples[i]
        if sample.media is None:
            return {"sample": sample, "features": None, "frame_subtitles": None}
        feats, frame_subs = self.store.load(sample.media, self.max_frames)
        item = {"sample": sample, "features": feats, "frame_subtitles": frame_subs}
        if "grounding" in sample.extra or "evidence" in sample.extra:  # the objective needs each frame's time
            item["timestamps"] = self.store.timestamps(sample.media, self.max_frames)
        return item


def collate(items: list[dict]) -> list[dict]:
    """Samples differ in frames and length: keep them as a list; the objective pads."""
    return items
