"""Predictor: a trained model and its own feature settings turn any audio into probabilities.

A hand-feature model was trained on one crop per clip (`offset` s in, `duration` s long,
as the checkpoint's feature settings say), so the first window is exactly that crop, and a
clip of the training corpus's length gets the prediction evaluation gives it. A longer
recording adds a window every `hop` s (default: one window length) while a whole window
fits; the overall probabilities are the windows' mean. An utterance-statistics model
reads the whole recording as one window, on its test-time versions.

A speaker-normalised model wants the speaker's enrolment clips (`--enrol`, audio only);
without them it falls back to its training statistics, as its report's "no_enrolment"
figures measured.

    ser-predict CKPT_OR_ONNX FILE... [--json] [--hop S] [--enrol CLIP ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ser.data.audio import AudioConfig, AudioError, resample
from ser.features.augment import AugmentConfig, make_versions
from ser.features.hand import HandFeatureConfig, feature_dim, hand_features
from ser.features.speaker_norm import Moments, moments
from ser.features.utterance import UtteranceStatsConfig, utterance_vector
from ser.serving.decode import Decoded, InputError, check_not_silent, decode_audio

Classify = Callable[[np.ndarray], np.ndarray]  # (W, D) raw features -> (W, C) probabilities


@dataclass(frozen=True)
class WindowPrediction:
    start: float  # seconds into the recording
    end: float
    top: str
    probabilities: dict[str, float]


@dataclass(frozen=True)
class Prediction:
    source: str
    top: str
    confidence: float
    probabilities: dict[str, float]  # class order of the model
    windows: list[WindowPrediction]
    duration: float  # seconds of decoded audio
    model: str
    audio_format: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FeatureSettings:
    """The checkpoint's audio crop and feature settings (`ser_meta["features"]`)."""

    audio: AudioConfig
    hand: HandFeatureConfig
    kind: str = "hand"
    stats: UtteranceStatsConfig | None = None
    versions: tuple[str, ...] = ("original",)  # test-time versions of a clip
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # how versions are made
    speaker_norm: bool = False
    fallback: Moments | None = None  # training statistics: no enrolment

    @classmethod
    def from_meta(cls, meta: dict) -> FeatureSettings:
        kind = meta.get("feature_type", "hand")
        features = meta["features"]
        audio = AudioConfig(**features["audio"])
        if kind == "utterance_stats":
            norm = meta.get("speaker_norm") or {}
            on = norm.get("mode", "none") == "speaker"
            fallback = (Moments(np.asarray(norm["global_mean"], np.float32),
                                np.asarray(norm["global_std"], np.float32)) if on else None)
            return cls(audio, HandFeatureConfig(), kind,
                       UtteranceStatsConfig(**features["stats"]),
                       tuple(meta.get("test_versions") or ("original",)),
                       AugmentConfig(**features["augment"]), on, fallback)
        if kind != "hand":
            raise ValueError(f"serving supports hand-feature and utterance-statistics models, "
                             f"not {kind!r}")
        if audio.duration is None:
            raise ValueError("the model's audio settings have no fixed duration (window length)")
        return cls(audio, HandFeatureConfig(**features["hand"]))

    @property
    def n_samples(self) -> int:
        return round(self.audio.duration * self.audio.sample_rate)

    @property
    def dim(self) -> int:
        return feature_dim(self.hand, self.audio.sample_rate, self.n_samples)

    def stats_rows(self, wave: np.ndarray) -> np.ndarray:
        """(versions, D) utterance statistics of a waveform at the model's rate."""
        sr = self.audio.sample_rate
        # versions made as in training (speed versions exactly; random ones such as noise
        # draw from the augment seed, as there is no file digest to seed them with here)
        rng = np.random.default_rng(self.augment.seed)
        waves = make_versions(wave, sr, self.versions, self.augment, rng)
        return np.stack([utterance_vector(waves[v], sr, self.stats) for v in self.versions])


@dataclass
class Predictor:
    """Features by the model's own settings, then the model; thread-safe for inference."""

    classify: Classify
    class_names: list[str]
    settings: FeatureSettings
    info: dict[str, Any] = field(default_factory=dict)  # what the page shows as "the model"
    hop: float | None = None  # seconds between windows; None: one window length
    enrolment: list[Moments] | None = None  # per test-time version, from `enrol`

    @classmethod
    def load(cls, path: str | Path, *, hop: float | None = None) -> Predictor:
        """A `.onnx` file runs on onnxruntime; anything else is read as a ser checkpoint."""
        path = Path(path)
        if path.suffix == ".onnx":
            from ser.serving.onnx_export import load_onnx

            classify, meta = load_onnx(path)
            backend = "onnxruntime"
        else:
            classify, meta = _load_torch(path)
            backend = "torch"
        info = model_info(path, meta, backend)
        return cls(classify, list(meta["class_names"]), FeatureSettings.from_meta(meta), info, hop)

    @property
    def name(self) -> str:
        return self.info.get("description", "model")

    def enrol(self, sources: Sequence[str | Path]) -> None:
        """Speaker statistics from a speaker's clips (audio only) for a speaker-normalised
        model; its later predictions use them instead of the training statistics."""
        if not self.settings.speaker_norm:
            raise ValueError("this model was not trained with speaker normalisation; "
                             "enrolment clips would not be used")
        if len(sources) < 2:
            raise ValueError(f"enrolment needs at least 2 clips of the speaker, got {len(sources)}")
        rows = []
        for source in sources:
            try:
                decoded = decode_audio(_read_file(source))
            except InputError as err:
                raise InputError(err.code, f"{source}: {err}") from None
            mono = decoded.samples.mean(axis=1, dtype=np.float32)
            rows.append(self.settings.stats_rows(self._model_rate(mono, decoded.sample_rate)))
        stacked = np.stack(rows)  # (clips, versions, D)
        self.enrolment = [moments(stacked[:, v]) for v in range(stacked.shape[1])]
        self.info["enrolment"] = f"{len(sources)} clips"

    def warm_up(self) -> None:
        """Build the mel basis, import the decoders: the first request shouldn't pay ~1 s."""
        import av  # noqa: F401 - webm/mp4 decoding

        sr = self.settings.audio.sample_rate
        n = round((self.settings.audio.offset + (self.settings.audio.duration or 2.0)) * sr)
        self.predict_waveform(0.1 * np.sin(np.arange(n, dtype=np.float32) * 0.05), sr)

    # --- audio in -----------------------------------------------------------------
    def predict(
        self, source: str | Path | bytes, *, name: str | None = None,
        max_seconds: float | None = None,
    ) -> Prediction:
        """A file path or a whole file's bytes, in any format `decode_audio` reads."""
        if isinstance(source, bytes):
            data, label = source, name or "<bytes>"
        else:
            data, label = _read_file(source), name or str(source)
        try:
            decoded = decode_audio(data, max_seconds=max_seconds)
            return self.predict_decoded(decoded, label)
        except InputError as err:
            raise InputError(err.code, f"{label}: {err}") from None

    def predict_decoded(self, decoded: Decoded, name: str = "<audio>") -> Prediction:
        mono = decoded.samples.mean(axis=1, dtype=np.float32)
        return self.predict_waveform(mono, decoded.sample_rate, name, decoded.format)

    def predict_waveform(
        self, mono: np.ndarray, sample_rate: int, name: str = "<audio>", audio_format: str = ""
    ) -> Prediction:
        starts, length = self.window_starts(len(mono), sample_rate)
        check_not_silent(mono[starts[0]:])
        probs = self.classify(self.features(mono, sample_rate, starts, length))
        windows = [
            WindowPrediction(s / sample_rate, min(s + length, len(mono)) / sample_rate,
                             self.class_names[int(p.argmax())], self._named(p))
            for s, p in zip(starts, probs, strict=True)
        ]
        overall = probs.mean(axis=0)
        best = int(overall.argmax())
        return Prediction(name, self.class_names[best], float(overall[best]), self._named(overall),
                          windows, len(mono) / sample_rate, self.name, audio_format)

    # --- windows and features ----------------------------------------------------
    def window_starts(self, n: int, sample_rate: int) -> tuple[list[int], int]:
        """Window starts and length in samples at the recording's own rate.

        Cropping at the native rate and then resampling mirrors `load_audio`, so the first
        window's features equal training's for the same file.
        """
        audio = self.settings.audio
        first = int(audio.offset * sample_rate)
        length = n - first if audio.duration is None else int(audio.duration * sample_rate)
        if n - first < audio.min_duration * sample_rate:
            raise InputError(
                "too_short", f"only {max(n - first, 0) / sample_rate:.2f} s of audio after the "
                f"model's {audio.offset:g} s offset, need at least {audio.min_duration:g} s")
        if audio.duration is None:  # whole-clip models: one window
            return [first], length
        hop = self.hop if self.hop is not None else audio.duration
        if hop <= 0:
            raise ValueError(f"hop must be positive, got {hop}")
        starts = [first]
        while int((audio.offset + len(starts) * hop) * sample_rate) + length <= n:
            starts.append(int((audio.offset + len(starts) * hop) * sample_rate))
        return starts, length

    def features(
        self, mono: np.ndarray, sample_rate: int, starts: Sequence[int], length: int
    ) -> np.ndarray:
        """(windows, D) raw feature vectors, by the model's settings; an utterance-
        statistics model gets (1, versions, D), speaker-normalised if it was trained so."""
        if self.settings.kind == "utterance_stats":
            rows = self.settings.stats_rows(self._model_rate(mono[starts[0]:], sample_rate))
            return self._speaker_normalised(rows)[None]
        target = self.settings.audio.sample_rate
        waves = [resample(mono[s : s + length], sample_rate, target) for s in starts]
        if len({len(w) for w in waves}) > 1:  # only a lone first window can be short
            raise AssertionError("windows of unequal length")
        return hand_features(np.stack(waves), target, self.settings.hand, self.settings.n_samples)

    def _model_rate(self, mono: np.ndarray, sample_rate: int) -> np.ndarray:
        return resample(mono, sample_rate, self.settings.audio.sample_rate)

    def _speaker_normalised(self, rows: np.ndarray) -> np.ndarray:
        if not self.settings.speaker_norm:
            return rows
        if self.enrolment is None:
            return self.settings.fallback.apply(rows)
        return np.stack([m.apply(r) for m, r in zip(self.enrolment, rows, strict=True)])

    def _named(self, probs: np.ndarray) -> dict[str, float]:
        return {c: round(float(p), 6) for c, p in zip(self.class_names, probs, strict=True)}


def _read_file(source: str | Path) -> bytes:
    try:
        return Path(source).read_bytes()
    except OSError as err:
        raise InputError("unreadable", f"{source}: cannot read file ({err})") from None


def _load_torch(path: Path) -> tuple[Classify, dict]:
    import torch

    from ser.training.checkpoint import load_classifier

    model = load_classifier(path)
    meta = {**model.ser_meta, "class_names": model.class_names}

    def classify(features: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = model(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
            return logits.float().softmax(dim=-1).numpy()

    return classify, meta


def model_info(path: Path, meta: dict, backend: str) -> dict[str, Any]:
    """Which model answers: network, file, content hash, training data and protocol."""
    with open(path, "rb") as f:
        sha1 = hashlib.file_digest(f, "sha1").hexdigest()
    net = str(meta.get("net", {}).get("_target_", "?")).rsplit(".", 1)[-1]
    split = meta.get("split") or {}
    protocol = str(split.get("protocol", "?")).replace("_", "-")
    if split.get("fold") is not None:
        protocol += f" fold {split['fold']}"
    if split.get("leaky"):
        protocol += " (LEAKY)"
    corpora = "+".join(meta.get("corpora") or ["?"])
    audio = meta["features"]["audio"]
    return {
        "network": net,
        "file": path.name,
        "sha1": sha1,
        "backend": backend,
        "trained_on": corpora,
        "protocol": protocol,
        "class_names": list(meta["class_names"]),
        "window_s": audio["duration"],
        "offset_s": audio["offset"],
        "sample_rate": audio["sample_rate"],
        "description": f"{net} {path.name} (sha1 {sha1[:10]}, {backend}), "
                       f"trained on {corpora}, {protocol}",
    }


# --- command line --------------------------------------------------------------------


def format_text(pred: Prediction) -> str:
    lines = [f"{pred.source}: {pred.top} ({pred.confidence:.2f}), {pred.duration:.2f} s, "
             f"{len(pred.windows)} window{'s' * (len(pred.windows) != 1)}"]
    width = max(map(len, pred.probabilities))
    for name, p in pred.probabilities.items():
        lines.append(f"  {name:<{width}} {p:6.3f} {'#' * round(p * 40)}")
    if len(pred.windows) > 1:
        for w in pred.windows:
            lines.append(f"  window {w.start:6.2f}-{w.end:6.2f} s: {w.top} "
                         f"({w.probabilities[w.top]:.2f})")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ser-predict", description="Emotion probabilities for audio files, by a trained "
        "ser checkpoint (.ckpt) or its ONNX export (.onnx).")
    parser.add_argument("model", type=Path, help="checkpoint (.ckpt) or ONNX export (.onnx)")
    parser.add_argument("files", nargs="+", type=Path, help="audio files (wav, flac, ogg, "
                        "opus, webm, mp3, m4a, ...), any rate, any channel count")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--hop", type=float, default=None,
                        help="seconds between windows of long recordings (default: window length)")
    parser.add_argument("--enrol", nargs="+", type=Path, default=None, metavar="CLIP",
                        help="clips of the same speaker, for a speaker-normalised model "
                        "(without them it uses its training statistics)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0 if every file was classified, 1 if any failed, 2 for a bad model."""
    args = _parser().parse_args(argv)
    try:
        predictor = Predictor.load(args.model, hop=args.hop)
    except (OSError, ValueError, KeyError) as err:
        print(f"ser-predict: cannot load model {args.model}: {err}", file=sys.stderr)
        return 2
    if args.enrol:
        try:
            predictor.enrol(args.enrol)
        except (OSError, ValueError) as err:  # AudioError and InputError are ValueErrors
            print(f"ser-predict: cannot enrol the speaker: {err}", file=sys.stderr)
            return 2
    results, failed = [], 0
    for path in args.files:
        try:
            pred = predictor.predict(path)
        except AudioError as err:
            failed += 1
            code = getattr(err, "code", "bad_audio")
            results.append({"source": str(path), "error": code, "detail": str(err)})
            if not args.json:
                print(f"error: {err}", file=sys.stderr)
            continue
        results.append(pred.to_dict())
        if not args.json:
            print(format_text(pred))
    if args.json:
        json.dump({"model": predictor.info, "results": results}, sys.stdout, indent=2)
        print()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
