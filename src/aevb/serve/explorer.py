"""What the latent-space explorer asks of a trained run, answered on arrays and PNGs: its
latent size and the KL of each dimension, decodings of a code (under a class, in a layer), the
code of an uploaded image, interpolations between test images, and the test codes in 2-D.

Every parameter is checked here (``BadRequest``: one line a client can show); the server
(``serve.server``) only parses HTTP. The run directory is only read.
"""

from __future__ import annotations

import io
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from aevb.engine.batches import split_batch
from aevb.engine.checkpoint import load_model
from aevb.engine.features import load_run_data
from aevb.models import Batch, Conditional, Encoder, Generative, Hierarchical, Likelihood, Model
from aevb.reporting.figures import kl_per_dimension

__all__ = ["BadRequest", "Explorer", "MAX_STEPS", "MAX_UPLOAD_BYTES", "Z_BOUND"]

Z_BOUND = 10.0
"""The largest |z_j| a decode takes: 10 standard deviations of the prior."""
MAX_STEPS = 64
MAX_GRID = 32
PAD_RANGE = 3.0
"""The pad spans ±3 prior standard deviations in each of its two dimensions."""
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
MAX_UPLOAD_PIXELS = 4096 * 4096
"""An uploaded image larger than this is refused before it is decoded (a decompression bomb)."""
CODES_SHOWN = 1000
"""Test points in the scatter (and the indices an interpolation takes)."""


class BadRequest(ValueError):
    """A request the explorer refuses; its message says why, on one line."""


@dataclass(frozen=True)
class Layer:
    name: str
    start: int
    size: int


class Explorer:
    """A run's model (eval mode, no gradients) and its first ``CODES_SHOWN`` test points."""

    def __init__(self, run_dir: str | Path, which: str = "best", device: str = "cpu") -> None:
        self.run_dir = Path(run_dir)
        self.config, model, _ = load_model(self.run_dir, which, device)
        if not isinstance(model, Generative):
            raise BadRequest(f"model {self.config.model.name!r} has no decoder to explore")
        self.model: Model = model
        self.device = torch.device(device)
        self.lock = threading.Lock()  # one model call at a time
        test = load_run_data(self.config.data, self.run_dir, device).test
        n = min(CODES_SHOWN, len(test))
        self.batch = split_batch(test, torch.arange(n, device=self.device))
        self.event_shape = tuple(self.batch.x.shape[1:])
        with torch.no_grad():
            self.codes = self._encode(self.batch) if isinstance(model, Encoder) else None
        self.code_dim = (self.codes.shape[1] if self.codes is not None
                         else int(getattr(model, "code_dim", self.config.model.latent_dim)))
        self.kl = self._kl_per_dimension()
        self.order = sorted(range(self.code_dim), key=lambda j: -self.kl[j])
        self.layers = self._layers()

    # -- what the page shows first ---------------------------------------------------------

    def info(self) -> dict[str, Any]:
        model = self.model
        classes = model.classes if isinstance(model, Conditional) else None
        return {
            "run": self.run_dir.name, "model": self.config.model.name,
            "description": type(model).description, "latent_dim": self.code_dim,
            "kl_per_dim": [round(v, 4) for v in self.kl], "order": self.order,
            "pad": self.order[:2], "classes": classes,
            "layers": [{"name": layer.name, "start": layer.start, "size": layer.size}
                       for layer in self.layers],
            "image_shape": list(self.event_shape), "encoder": self.codes is not None,
            "test_points": len(self.batch.x), "z_bound": Z_BOUND, "max_steps": MAX_STEPS,
            "pad_range": PAD_RANGE,
        }

    def codes_2d(self) -> dict[str, Any]:
        """The test codes on the pad's two dimensions, their labels, and the full codes."""
        if self.codes is None:
            raise BadRequest(f"model {self.config.model.name!r} has no encoder: no codes")
        a, b = (self.order + self.order)[:2]
        codes = self.codes.float().cpu().numpy()
        labels = None if self.batch.y is None else self.batch.y.cpu().tolist()
        return {"dims": [a, b], "points": np.round(codes[:, [a, b]], 4).tolist(),
                "labels": labels, "codes": np.round(codes, 4).tolist()}

    # -- decoding --------------------------------------------------------------------------

    def decode_png(self, z_text: str | None, label: str | None = None,
                   layer: str | None = None) -> bytes:
        z = self._code(z_text)
        self._layer(layer)  # checked: every layer is a slice of the one code
        with self.lock, torch.no_grad():
            image = self._decode(z[None], self._condition(label, 1))[0]
        return png(image)

    def manifold_png(self, n_text: str | None, z_text: str | None = None,
                     label: str | None = None, layer: str | None = None) -> bytes:
        """Decodings over an n × n grid of the pad's two dimensions (±``PAD_RANGE``, cell
        centres, the second upwards), the others at ``z`` (default 0): for a 2-D latent, the
        whole learned manifold (the paper's Fig. 4), drawn under the pad."""
        n = _integer(n_text or "12", "n", 2, MAX_GRID)
        z = self._code(z_text) if z_text else torch.zeros(self.code_dim, device=self.device)
        layer_info = self.layers[self._layer(layer)]
        dims = [j for j in self.order if layer_info.start <= j < layer_info.start + layer_info.size]
        a, b = (dims + dims)[:2]
        axis = (torch.arange(n, device=self.device) + 0.5) / n * 2 * PAD_RANGE - PAD_RANGE
        grid = z.repeat(n * n, 1)
        grid[:, a] = axis.repeat(n)  # across
        if b != a:
            grid[:, b] = axis.flip(0).repeat_interleave(n)  # up
        with self.lock, torch.no_grad():
            images = self._decode(grid, self._condition(label, n * n))
        rows = [torch.cat(list(images[i * n:(i + 1) * n]), dim=-1) for i in range(n)]
        return png(torch.cat(rows, dim=-2))

    def interpolate_png(self, a: str | None, b: str | None, steps: str | None,
                        mode: str | None) -> bytes:
        if self.codes is None:
            raise BadRequest(f"model {self.config.model.name!r} has no encoder to interpolate")
        i, j = (_integer(v, name, 0, len(self.codes) - 1) for v, name in ((a, "a"), (b, "b")))
        count = _integer(steps or "8", "steps", 2, MAX_STEPS)
        mode = mode or "linear"
        if mode not in ("linear", "slerp"):
            raise BadRequest(f"mode must be linear or slerp, got {mode!r}")
        t = torch.linspace(0, 1, count, device=self.device)[:, None]
        start, end = self.codes[i].float(), self.codes[j].float()
        path = slerp(start, end, t) if mode == "slerp" else (1 - t) * start + t * end
        label = None
        if isinstance(self.model, Conditional) and self.batch.y is not None:
            label = str(int(self.batch.y[i]))  # each end's own class: a's
        with self.lock, torch.no_grad():
            images = self._decode(path, self._condition(label, count))
        return png(torch.cat(list(images), dim=-1))

    # -- encoding an image ------------------------------------------------------------------

    def encode_upload(self, data: bytes, label: str | None = None) -> dict[str, Any]:
        if self.codes is None or not isinstance(self.model, Encoder):
            raise BadRequest(f"model {self.config.model.name!r} has no encoder")
        x = read_upload(data, self.event_shape).to(self.device)
        y = None
        if isinstance(self.model, Conditional):
            y = torch.tensor([_integer(label or "0", "label", 0, self._classes() - 1)],
                             device=self.device)
        with self.lock, torch.no_grad():
            code = self._encode(Batch(x[None], y))[0]
            rebuilt = self._decode(code[None], None if y is None else
                                   self._condition(str(int(y[0])), 1))[0]
        a, b = (self.order + self.order)[:2]
        return {"code": [round(float(v), 4) for v in code], "point": [float(code[a]),
                                                                      float(code[b])],
                "reconstruction": "data:image/png;base64," + _base64(png(rebuilt)),
                "input": "data:image/png;base64," + _base64(png(x))}

    # -- checks ----------------------------------------------------------------------------

    def _code(self, text: str | None) -> torch.Tensor:
        if not text:
            raise BadRequest(f"z is required: {self.code_dim} comma-separated numbers")
        if len(text) > 32 * self.code_dim + 64:
            raise BadRequest("z is too long")
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            raise BadRequest("z must be comma-separated numbers") from None
        if len(values) != self.code_dim:
            raise BadRequest(f"z must have {self.code_dim} values, got {len(values)}")
        if not all(math.isfinite(v) and abs(v) <= Z_BOUND for v in values):
            raise BadRequest(f"each z value must be a finite number within ±{Z_BOUND:g}")
        return torch.tensor(values, dtype=torch.float32, device=self.device)

    def _decode(self, z: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        assert isinstance(self.model, Generative)
        return self.model.decode(z, condition).float()

    def _classes(self) -> int:
        classes = self.model.classes if isinstance(self.model, Conditional) else None
        if not classes:
            raise BadRequest("this model takes no class label")
        return int(classes)

    def _condition(self, label: str | None, count: int) -> torch.Tensor | None:
        if not isinstance(self.model, Conditional):
            if label not in (None, ""):
                raise BadRequest("this model takes no class label")
            return None
        k = _integer(label if label not in (None, "") else "0", "label", 0, self._classes() - 1)
        labels = torch.full((count,), k, device=self.device)
        return self.model.condition_of(labels)

    def _layer(self, text: str | None) -> int:
        if text in (None, ""):
            return 0
        return _integer(text, "layer", 0, len(self.layers) - 1)

    def _encode(self, batch: Batch) -> torch.Tensor:
        assert isinstance(self.model, Encoder)
        return torch.cat([self.model.encode(Batch(batch.x[i:i + 250],
                                                  None if batch.y is None else batch.y[i:i + 250]))
                          for i in range(0, len(batch.x), 250)]).float()

    def _kl_per_dimension(self) -> list[float]:
        """KL of each code dimension: the run's evaluation where it has one, else measured on
        the test points; for a model without a likelihood, the codes' variances."""
        values = [v for part in kl_per_dimension(self.run_dir).values() for v in part]
        if len(values) == self.code_dim:
            return [float(v) for v in values]
        if isinstance(self.model, Likelihood):
            with torch.no_grad():
                terms = self.model.elbo_terms(Batch(self.batch.x[:250], None if self.batch.y
                                                    is None else self.batch.y[:250]))
            values = torch.cat([part.mean(0) for part in terms.kl.values()]).tolist()
            if len(values) == self.code_dim:
                return [float(v) for v in values]
        if self.codes is not None:
            return self.codes.var(0).tolist()
        return [0.0] * self.code_dim

    def _layers(self) -> list[Layer]:
        """The code's layers, z1 first: slices of the code where it joins every layer."""
        if isinstance(self.model, Hierarchical):
            with torch.no_grad():
                sizes = {name: part.shape[1] for name, part in self.model.encode_layers(
                    Batch(self.batch.x[:2])).items()}
            if sum(sizes.values()) == self.code_dim:
                starts = np.cumsum([0, *sizes.values()])[:-1]
                return [Layer(n, int(s), size) for (n, size), s in zip(sizes.items(), starts,
                                                                       strict=True)]
            first = next(iter(sizes))
            return [Layer(first, 0, self.code_dim)]
        return [Layer("z", 0, self.code_dim)]


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from a to b at t (S, 1) (White 2016); linear where they are
    parallel."""
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp(min=1e-12)
    omega = torch.arccos(cos.clamp(-1, 1))
    if float(omega.sin().abs()) < 1e-6:
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / omega.sin()


def png(image: torch.Tensor) -> bytes:
    """A (C, H, W) image of values in [0, 1] (grey or RGB) as PNG bytes."""
    array = (image.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    mode = "L" if array.shape[0] == 1 else "RGB"
    picture = Image.fromarray(array[0] if mode == "L" else array.transpose(1, 2, 0), mode)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def read_upload(data: bytes, event_shape: tuple[int, ...]) -> torch.Tensor:
    """An uploaded image as the model's input (C, H, W) in [0, 1]: decoded by Pillow with a
    pixel limit, converted to grey or RGB and resized to the data's H, W."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise BadRequest(f"the upload is over {MAX_UPLOAD_BYTES // 1024 // 1024} MiB")
    if len(event_shape) != 3:
        raise BadRequest("this model's data are not images")
    c, h, w = event_shape
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.width * opened.height > MAX_UPLOAD_PIXELS:
                raise BadRequest(f"the image has over {MAX_UPLOAD_PIXELS} pixels")
            picture = opened.convert("L" if c == 1 else "RGB").resize((w, h),
                                                                     Image.Resampling.LANCZOS)
    except BadRequest:
        raise
    except Exception as error:  # not an image Pillow reads, a truncated file, a bomb
        raise BadRequest(f"the upload is not an image this server reads ({type(error).__name__})"
                         ) from None
    array = np.asarray(picture, dtype=np.float32) / 255
    array = array[None] if c == 1 else array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


def _integer(text: str | None, name: str, low: int, high: int) -> int:
    try:
        value = int(text) if text is not None and len(text) < 12 else None
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}, got {text!r}")
    return value


def _base64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")
