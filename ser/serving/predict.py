"""Predictor: a trained model and its own input pipeline turn any audio into probabilities.

Every model family is served the same way: the checkpoint's input pipeline (the object
training used, rebuilt from its metadata) cuts the recording into windows and makes the
network's inputs, and the model answers per window. The first window is the crop
training used for a clip, so a clip of the training corpus gets the prediction
evaluation gives it; a longer recording adds a window every `hop` s (default: one window
length) while a whole window fits, and the overall probabilities are the windows' mean.
Whole-clip models (utterance statistics) read the whole recording as one window.
Windows are read, featurised and scored `WINDOW_BATCH` at a time from a recording decoded
into a temporary file, so memory does not grow with the recording's length.

A speaker-normalised model wants the speaker's enrolment clips (`--enrol`, audio only);
without them it falls back to its training statistics, as its report's "no_enrolment"
figures measured. `with_enrolment` gives a per-speaker copy that shares the model, so a
server can answer each visitor with their own statistics without changing the shared one.

`--segments` predicts each speech segment of a long recording as a clip of its own (a
voice-activity detector finds them; see `ser.serving.segments`): an emotion timeline.

    ser-predict CKPT_OR_ONNX FILE... [--json] [--hop S] [--enrol CLIP ...] [--segments]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ser.data.audio import AudioError
from ser.features.opensmile_functionals import NonFiniteFunctionalsError
from ser.features.pipelines import InputPipeline, pipeline_from_meta
from ser.serving.decode import (
    Audio,
    Decoded,
    InputError,
    audio_levels,
    check_levels,
    decode_audio,
    spool_audio,
)
from ser.training.schema import CheckpointError, CheckpointMeta

# network inputs (windows, versions, ...) -> (windows, classes) probabilities
Classify = Callable[[dict[str, np.ndarray]], np.ndarray]
WINDOW_BATCH = 16  # windows featurised and scored together


@dataclass(frozen=True)
class WindowPrediction:
    start: float  # seconds into the recording
    end: float
    top: str
    probabilities: dict[str, float]


@dataclass(frozen=True)
class SegmentPrediction:
    """One speech segment of a recording, predicted as a clip of its own."""

    start: float  # seconds into the recording: the speech the detector found
    end: float
    clip_start: float  # the audio the model read: the speech with its context around it
    clip_end: float
    top: str | None  # None when skipped
    confidence: float | None
    probabilities: dict[str, float] | None
    skipped: str | None = None  # why it was not classified: an InputError code


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
    segments: list[SegmentPrediction] | None = None  # with --segments: the timeline

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Predictor:
    """The model's input pipeline, then the model; thread-safe for inference."""

    classify: Classify
    class_names: list[str]
    pipeline: InputPipeline
    info: dict[str, Any] = field(default_factory=dict)  # what the page shows as "the model"
    hop: float | None = None  # seconds between windows; None: one window length
    enrolment: Any = None  # the speaker's statistics, from `enrol`

    def __post_init__(self) -> None:
        if self.hop is not None and not self.hop > 0:
            raise ValueError(f"hop must be a positive number of seconds, got {self.hop}")

    @classmethod
    def load(cls, path: str | Path, *, hop: float | None = None) -> Predictor:
        """A `.onnx` file runs on onnxruntime; anything else is read as a ser checkpoint.

        CheckpointError (a ValueError naming the file) for anything that is not a usable
        ser model."""
        path = Path(path)
        if path.suffix == ".onnx":
            from ser.serving.onnx_export import load_onnx

            classify, meta = load_onnx(path)
            backend = "onnxruntime"
            try:
                pipeline = pipeline_from_meta(meta.pipeline)
            except ValueError as err:
                raise CheckpointError(f"{path}: {err}") from None
        else:
            classify, meta, pipeline = _load_torch(path)
            backend = "torch"
        return cls(classify, list(meta.class_names), pipeline, model_info(path, meta, backend),
                   hop)

    @property
    def name(self) -> str:
        return self.info.get("description", "model")

    def enrol(self, sources: Sequence[str | Path]) -> None:
        """Speaker statistics from a speaker's clips (audio only) for a speaker-normalised
        model; its later predictions use them instead of the training statistics."""
        self._check_enrolment(len(sources))
        clips = []
        for source in sources:
            try:
                decoded = decode_audio(Path(source))
            except InputError as err:
                raise InputError(err.code, f"{source}: {err}") from None
            clips.append((str(source), decoded.samples, decoded.sample_rate))
        self.enrolment = self.enrolment_statistics(clips)
        self.info["enrolment"] = f"{len(sources)} clips"

    def enrolment_statistics(self, clips: Sequence[tuple[str, np.ndarray, int]]) -> Any:
        """The speaker's statistics from (name, mono, sample rate) clips; changes nothing.

        InputError `duplicate_clip` if two clips hold the same decoded samples,
        `degenerate_enrolment` if they hardly differ (the pipeline's spread check)."""
        self._check_enrolment(len(clips))
        seen: dict[str, str] = {}
        for name, mono, _ in clips:
            digest = hashlib.sha1(np.ascontiguousarray(mono, np.float32).tobytes()).hexdigest()
            if digest in seen:
                raise InputError("duplicate_clip", f"{name} holds the same audio as "
                                 f"{seen[digest]}: enrol different recordings of the speaker")
            seen[digest] = name
        try:
            return self.pipeline.enrol([(mono, sr) for _, mono, sr in clips])
        except AudioError:
            raise
        except ValueError as err:  # the pipeline's degenerate-spread refusal
            raise InputError("degenerate_enrolment", str(err)) from None

    def _check_enrolment(self, n_clips: int) -> None:
        if not self.pipeline.uses_enrolment:
            raise ValueError("this model was not trained with speaker normalisation; "
                             "enrolment clips would not be used")
        if n_clips < 2:
            raise ValueError(f"enrolment needs at least 2 clips of the speaker, got {n_clips}")

    def with_enrolment(self, enrolment: Any, clips: int = 0) -> Predictor:
        """A copy that predicts with these statistics (None: the training statistics); it
        shares the model and pipeline, and this predictor is left as it was."""
        info = {k: v for k, v in self.info.items() if k != "enrolment"}
        if enrolment is not None:
            info["enrolment"] = f"{clips} clips"
        return replace(self, enrolment=enrolment, info=info)

    def warm_up(self) -> None:
        """Build the mel basis, import the decoders: the first request shouldn't pay ~1 s."""
        import av  # noqa: F401 - webm/mp4 decoding

        audio = self.pipeline.audio
        sr = audio.sample_rate
        n = round((audio.offset + (audio.duration or 2.0)) * sr)
        t = np.arange(n, dtype=np.float32)
        self.predict_waveform((0.1 * np.sin(t * 0.05) * (1 + np.sin(t * 3e-4))).astype(
            np.float32), sr)

    # --- audio in -----------------------------------------------------------------
    def predict(
        self, source: str | Path | bytes, *, name: str | None = None,
        max_seconds: float | None = None,
    ) -> Prediction:
        """A file path or a whole file's bytes, in any format `decode_audio` reads.

        A file is decoded into a temporary file that windows are read from (`spool_audio`),
        so its length costs disk, not memory; bytes (an upload) are decoded in memory."""
        label = name or ("<bytes>" if isinstance(source, bytes) else str(source))
        try:
            if isinstance(source, bytes):
                return self.predict_audio(decode_audio(source, max_seconds=max_seconds), label)
            with spool_audio(Path(source), max_seconds=max_seconds) as audio:
                return self.predict_audio(audio, label)
        except InputError as err:
            raise InputError(err.code, f"{label}: {err}") from None

    def predict_waveform(
        self, mono: np.ndarray, sample_rate: int, name: str = "<audio>", audio_format: str = ""
    ) -> Prediction:
        """A mono recording already in memory."""
        decoded = Decoded(np.asarray(mono, dtype=np.float32), sample_rate, "", audio_format)
        return self.predict_audio(decoded, name)

    def predict_audio(self, audio: Audio, name: str = "<audio>") -> Prediction:
        """A decoded recording (in memory or spooled), read `WINDOW_BATCH` windows at a time."""
        try:
            spans = self.pipeline.windows(audio.frames, audio.sample_rate, self.hop)
        except AudioError as err:
            raise InputError(getattr(err, "code", "bad_audio"), str(err)) from None
        check_levels(audio_levels(audio, spans[0][0]))
        probs = self.window_probabilities(audio, spans)
        sr = audio.sample_rate
        windows = [
            WindowPrediction(s / sr, e / sr, self.class_names[int(p.argmax())], self._named(p))
            for (s, e), p in zip(spans, probs, strict=True)
        ]
        overall = probs.mean(axis=0)
        best = int(overall.argmax())
        return Prediction(name, self.class_names[best], float(overall[best]), self._named(overall),
                          windows, audio.duration, self.name, audio.format)

    def window_probabilities(self, audio: Audio, spans: Sequence[tuple[int, int]]
                             ) -> np.ndarray:
        """(windows, classes), `WINDOW_BATCH` windows at a time, each batch reading only the
        samples its windows cover; non-finite is an error."""
        parts = []
        for i in range(0, len(spans), WINDOW_BATCH):
            batch = spans[i:i + WINDOW_BATCH]
            lo, hi = min(s for s, _ in batch), max(e for _, e in batch)
            try:
                inputs = self.pipeline.serve_inputs(audio.read(lo, hi), audio.sample_rate,
                                                    [(s - lo, e - lo) for s, e in batch],
                                                    self.enrolment)
            except NonFiniteFunctionalsError as err:
                raise InputError("bad_audio", f"the audio gives non-finite features ({err})"
                                 ) from None
            if not all(np.isfinite(x).all() for x in inputs.values()):
                raise InputError("bad_audio", "the audio gives non-finite features "
                                 "(extreme sample values?)")
            parts.append(self.classify(inputs))
        probs = np.concatenate(parts)
        if not np.isfinite(probs).all():
            raise InputError("bad_audio", "the model's output is not finite for this audio")
        return probs

    def _named(self, probs: np.ndarray) -> dict[str, float]:
        return {c: round(float(p), 6) for c, p in zip(self.class_names, probs, strict=True)}


def _load_torch(path: Path) -> tuple[Classify, CheckpointMeta, InputPipeline]:
    import torch

    from ser.serving.onnx_export import Probabilities
    from ser.training.checkpoint import load_classifier

    model = load_classifier(path)
    wrapper = Probabilities(model).eval()

    def classify(inputs: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            tensors = [torch.from_numpy(np.ascontiguousarray(x)) for x in inputs.values()]
            return wrapper(*tensors).float().numpy()

    return classify, model.checkpoint_meta(), model.pipeline


def model_info(path: Path, meta: CheckpointMeta, backend: str) -> dict[str, Any]:
    """Which model answers: family, file, content hash, training data and protocol."""
    with open(path, "rb") as f:
        sha1 = hashlib.file_digest(f, "sha1").hexdigest()
    training = meta.training
    split = training.get("split") or {}
    protocol = str(split.get("protocol", "?")).replace("_", "-")
    if split.get("fold") is not None:
        protocol += f" fold {split['fold']}"
    if split.get("leaky"):
        protocol += " (LEAKY)"
    corpora = "+".join(training.get("corpora") or ["?"])
    audio = meta.pipeline.get("features", {}).get("audio", {})
    return {
        "network": meta.family,
        "input": meta.pipeline.get("kind"),
        "file": path.name,
        "sha1": sha1,
        "backend": backend,
        "trained_on": corpora,
        "protocol": protocol,
        "class_names": list(meta.class_names),
        "window_s": audio.get("duration"),
        "offset_s": audio.get("offset"),
        "sample_rate": audio.get("sample_rate"),
        "description": f"{meta.family} {path.name} (sha1 {sha1[:10]}, {backend}), "
                       f"trained on {corpora}, {protocol}",
    }


# --- command line --------------------------------------------------------------------


def format_text(pred: Prediction) -> str:
    parts = pred.windows if pred.segments is None else pred.segments
    what = "window" if pred.segments is None else "segment"
    lines = [f"{pred.source}: {pred.top} ({pred.confidence:.2f}), {pred.duration:.2f} s, "
             f"{len(parts)} {what}{'s' * (len(parts) != 1)}"]
    width = max(map(len, pred.probabilities))
    for name, p in pred.probabilities.items():
        lines.append(f"  {name:<{width}} {p:6.3f} {'#' * round(p * 40)}")
    for seg in pred.segments or []:
        what = f"skipped ({seg.skipped})" if seg.skipped else f"{seg.top} ({seg.confidence:.2f})"
        lines.append(f"  segment {seg.start:6.2f}-{seg.end:6.2f} s: {what}")
    if len(pred.windows) > 1 and pred.segments is None:
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
    parser.add_argument("--hop", type=_positive_seconds, default=None,
                        help="seconds between windows of long recordings (default: window "
                        "length: the model's crop, or 20 s for whole-clip models). Any length "
                        "is read: a file is decoded into a temporary file (4 bytes a sample at "
                        "its rate) and read 16 windows at a time, so memory stays flat (a "
                        "30-minute 48 kHz stereo file: under 1 GB)")
    parser.add_argument("--enrol", nargs="+", type=Path, default=None, metavar="CLIP",
                        help="clips of the same speaker, for a speaker-normalised model "
                        "(without them it uses its training statistics)")
    parser.add_argument("--segments", action="store_true",
                        help="an emotion timeline: predict each speech segment (found by a "
                        "voice-activity detector) as a clip of its own, instead of sliding "
                        "windows")
    return parser


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0 if every file was classified, 1 if any failed, 2 for a bad model.

    A reader that stops early (`ser-predict ... | head`) ends the run quietly, status 1."""
    try:
        status = _run(_parser().parse_args(argv))
        sys.stdout.flush()  # here, not at exit, where a closed pipe can't be caught
        return status
    except BrokenPipeError:
        # the rest of the output has nowhere to go; point stdout at /dev/null so the
        # interpreter's own flush at exit doesn't fail a second time
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _run(args: argparse.Namespace) -> int:
    try:
        predictor = Predictor.load(args.model, hop=args.hop)
    except (OSError, ValueError) as err:  # CheckpointError is a ValueError naming the file
        print(f"ser-predict: cannot load model: {err}", file=sys.stderr)
        return 2
    if args.enrol:
        try:
            predictor.enrol(args.enrol)
        except (OSError, ValueError) as err:  # AudioError and InputError are ValueErrors
            print(f"ser-predict: cannot enrol the speaker: {err}", file=sys.stderr)
            return 2
    results, failed = [], 0
    if args.segments:
        from ser.serving.segments import predict_segments_of

        def predict(path: Path) -> Prediction:
            return predict_segments_of(predictor, path)
    else:
        predict = predictor.predict
    for path in args.files:
        try:
            pred = predict(path)
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
