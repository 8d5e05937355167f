"""ser: speech emotion recognition training framework."""

__version__ = "0.1.0"
