"""Network configuration for the multi-scale reshuffling network (Tang & Luo, CLIC 2018)."""
from __future__ import annotations

import dataclasses
import json
import numbers
from typing import Dict, List, Tuple

IN_CHANNELS = 3
DOWN_STEPS = 3  # three reshuffle-down steps by 2: 3 -> 12 -> 48 -> 192 channels at 1/8 resolution
PAD_MULTIPLE = 2 ** DOWN_STEPS


def _sequence(name: str, v) -> tuple:
    if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
        raise TypeError(f"{name} must be a list of 3 integers, got {v!r}")
    return tuple(v)


def _integer(name: str, v) -> int:
    """``v`` as an int when it is a whole number (a Python, numpy or 0-d torch integer, or a
    float with no fraction: JSON's 4.0, a float32 array's element); a string, bool or fraction is
    refused, not truncated or taken as true."""
    x = v.item() if hasattr(v, "item") and not isinstance(v, (int, float)) else v
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not float(x).is_integer():
        raise TypeError(f"{name}: expected whole numbers, got {v!r}")
    return int(x)


@dataclasses.dataclass(frozen=True)
class ReshuffleNetConfig:
    """Architecture of a ReshuffleNet.

    There are three dense blocks, at 1/8, 1/4 and 1/2 resolution.  Block ``i`` has
    ``layers[i]`` dense layers, each adding ``growth[i]`` channels (N in the paper)
    through a ``1x1 conv (M -> bottleneck*N) -> ELU -> 3x3 conv (bottleneck*N -> N)``.
    Between blocks the features are reshuffled up by 2 (channels / 4, resolution x 2).
    """

    growth: Tuple[int, int, int] = (64, 32, 16)
    layers: Tuple[int, int, int] = (17, 10, 10)
    bottleneck: int = 4
    residual: bool = True

    def __post_init__(self):
        growth = tuple(_integer("growth", g) for g in _sequence("growth", self.growth))
        layers = tuple(_integer("layers", n) for n in _sequence("layers", self.layers))
        object.__setattr__(self, "bottleneck", _integer("bottleneck", self.bottleneck))
        if isinstance(self.residual, (str, bytes, float)) or self.residual not in (True, False):
            raise TypeError(f"residual must be True or False, got {self.residual!r}")
        object.__setattr__(self, "residual", bool(self.residual))
        object.__setattr__(self, "growth", growth)
        object.__setattr__(self, "layers", layers)
        if len(growth) != 3 or len(layers) != 3:
            raise ValueError(f"growth and layers need 3 entries each (one per scale), got {growth} and {layers}")
        for g in growth:
            if g <= 0 or g % 4:
                raise ValueError(f"growth rates must be positive multiples of 4, got {growth}")
        for n in layers:
            if n < 0:
                raise ValueError(f"layer counts must be >= 0, got {layers}")
        if int(self.bottleneck) < 1:
            raise ValueError(f"bottleneck factor must be >= 1, got {self.bottleneck}")
        for i, (c_in, c_out) in enumerate(self.block_channels()):
            if c_out % 4:
                raise ValueError(
                    f"dense block {i} ends with {c_out} channels ({c_in} + {layers[i]} x {growth[i]}), "
                    "which is not divisible by 4 = 2^2, so it cannot be reshuffled up by 2")

    # ----------------------------------------------------------------- derived
    def block_channels(self) -> List[Tuple[int, int]]:
        """(input, output) channel count of each dense block."""
        out = []
        c = IN_CHANNELS * 4 ** DOWN_STEPS  # 192
        for g, n in zip(self.growth, self.layers):
            c_out = c + g * n
            out.append((c, c_out))
            c = c_out // 4
        return out

    @property
    def tail_channels(self) -> int:
        return self.block_channels()[-1][1] // 4

    def num_parameters(self) -> int:
        total = 0
        for (c_in, _), g, n in zip(self.block_channels(), self.growth, self.layers):
            w = self.bottleneck * g
            for j in range(n):
                m = c_in + j * g
                total += m * w + w + 9 * w * g + g
        total += 9 * self.tail_channels * IN_CHANNELS + IN_CHANNELS
        return total

    def macs_per_pixel(self) -> float:
        """Multiply-adds per input pixel (convolutions only)."""
        total = 0.0
        for i, ((c_in, _), g, n) in enumerate(zip(self.block_channels(), self.growth, self.layers)):
            area = 4.0 ** (DOWN_STEPS - i)  # input pixels per feature pixel at this scale
            w = self.bottleneck * g
            macs = sum((c_in + j * g) * w + 9 * w * g for j in range(n))
            total += macs / area
        total += 9 * self.tail_channels * IN_CHANNELS
        return total

    # ---------------------------------------------------------- serialisation
    def to_dict(self) -> Dict:
        return {"growth": list(self.growth), "layers": list(self.layers),
                "bottleneck": int(self.bottleneck), "residual": bool(self.residual)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Dict) -> "ReshuffleNetConfig":
        if not isinstance(d, dict):
            raise TypeError(f"a config is a JSON object of {[f.name for f in dataclasses.fields(cls)]}, "
                            f"got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ReshuffleNetConfig fields: {sorted(unknown)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})

    @classmethod
    def from_json(cls, s: str) -> "ReshuffleNetConfig":
        return cls.from_dict(json.loads(s))

    @classmethod
    def preset(cls, name: str) -> "ReshuffleNetConfig":
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


PRESETS: Dict[str, ReshuffleNetConfig] = {
    # Table 1 of the paper: 192 -> 1280 at 1/8, 320 -> 640 at 1/4, 160 -> 320 at 1/2, 80 at full resolution.
    "paper": ReshuffleNetConfig(growth=(64, 32, 16), layers=(17, 10, 10), bottleneck=4, residual=True),
    # Between the two: about 3x small's and 1/3 of paper's multiply-adds per pixel (their geometric
    # mean); the third point of the preset study (tools/preset_study.py, docs/preset_study.md).
    "medium": ReshuffleNetConfig(growth=(48, 24, 12), layers=(8, 8, 8), bottleneck=4, residual=True),
    # About 10x cheaper; trainable on a laptop CPU.
    "small": ReshuffleNetConfig(growth=(32, 16, 8), layers=(6, 6, 6), bottleneck=4, residual=True),
    # Tiny: for tests.
    "tiny": ReshuffleNetConfig(growth=(16, 8, 4), layers=(2, 3, 2), bottleneck=2, residual=True),
}
