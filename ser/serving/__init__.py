"""Serving trained models: prediction on any audio, ONNX export, a web page."""

from ser.serving.decode import Decoded, InputError, decode_audio
from ser.serving.predict import Prediction, Predictor, WindowPrediction

__all__ = ["Decoded", "InputError", "Prediction", "Predictor", "WindowPrediction", "decode_audio"]
