"""The checkpoint schema: what a ser checkpoint holds beside its weights.

`CheckpointMeta` is written into every checkpoint (`ser_meta`) and every ONNX export's
metadata, as plain JSON values. `family` names the network (ser.models.FAMILIES),
`pipeline` the input pipeline with its fitted statistics (ser.features.pipelines),
`net` the network's own description, `training` how the run was trained and tested.
A reader refuses any other `schema_version`: the fields' meaning is fixed per version.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a usable ser model; the message names the file and the problem."""


@dataclass(frozen=True)
class CheckpointMeta:
    family: str
    pipeline: dict[str, Any]
    net: dict[str, Any]
    class_names: list[str]
    training: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (tuples become lists; anything else JSON lacks is an error),
        so a checkpoint and its ONNX export hold the same metadata."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, meta: Any) -> CheckpointMeta:
        """Checked field by field; ValueError says which field is wrong."""
        if not isinstance(meta, dict):
            raise ValueError("no ser metadata (not a ser checkpoint)")
        version = meta.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"schema version {version!r}, this ser reads version "
                             f"{SCHEMA_VERSION} (a checkpoint from another ser version?)")
        checks = {"family": str, "pipeline": dict, "net": dict, "class_names": list,
                  "training": dict}
        for name, kind in checks.items():
            if not isinstance(meta.get(name), kind):
                raise ValueError(f"metadata field {name!r} is missing or not a {kind.__name__}")
        names = meta["class_names"]
        if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            raise ValueError("metadata field 'class_names' must be distinct class names")
        return cls(**{k: meta[k] for k in (*checks, "schema_version")})
