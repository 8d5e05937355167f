"""Serving trained models: prediction on any audio, ONNX export, a web page."""

from ser.serving.decode import Decoded, InputError, decode_audio

__all__ = ["Decoded", "InputError", "Prediction", "Predictor", "WindowPrediction", "decode_audio"]


def __getattr__(name: str):
    # imported on first use, so `python -m ser.serving.predict` runs a module not yet loaded
    if name in ("Prediction", "Predictor", "WindowPrediction"):
        from ser.serving import predict

        return getattr(predict, name)
    raise AttributeError(f"module 'ser.serving' has no attribute {name!r}")
