"""Registry of corpus scanners: name -> function(root) returning Clips.

Each corpus is read from `data_dir/<name>`: ravdess, crema_d, tess, savee, emodb.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ser.data.clip import Clip
from ser.data.crema_d import scan_crema_d
from ser.data.emodb import scan_emodb
from ser.data.ravdess import scan_ravdess
from ser.data.savee import scan_savee
from ser.data.tess import scan_tess

SCANNERS: dict[str, Callable[[Path], list[Clip]]] = {
    "ravdess": scan_ravdess,
    "crema_d": scan_crema_d,
    "tess": scan_tess,
    "savee": scan_savee,
    "emodb": scan_emodb,
}


def load_corpora(data_dir: Path, corpora: Sequence[str]) -> list[Clip]:
    """Clips of every named corpus, each read from `data_dir/<name>`."""
    if len(set(corpora)) != len(corpora):
        raise ValueError(f"a corpus is named twice in {list(corpora)}")
    clips: list[Clip] = []
    for name in corpora:
        if name not in SCANNERS:
            raise ValueError(f"unknown corpus {name!r}; known: {', '.join(sorted(SCANNERS))}")
        clips.extend(SCANNERS[name](Path(data_dir) / name))
    return clips
