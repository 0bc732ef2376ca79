"""Write rollout frames to an mp4 (imageio + imageio-ffmpeg, optional) or an animated GIF (Pillow)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from agents.runtime.atomic_io import atomic_path

log = logging.getLogger(__name__)


def _check_frames(frames) -> None:
    if frames is None or len(frames) == 0:
        raise ValueError("write_video needs at least one frame")
    shape = None
    for i, f in enumerate(frames):
        if not (isinstance(f, np.ndarray) and f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3):
            desc = f"{f.dtype} array of shape {f.shape}" if isinstance(f, np.ndarray) else type(f).__name__
            raise ValueError(f"frame {i}: expected an HxWx3 uint8 RGB array, got {desc}")
        if shape is None:
            shape = f.shape
        elif f.shape != shape:
            raise ValueError(f"frame {i}: shape {f.shape} differs from frame 0 shape {shape}; all frames must be HxWx3 of one size")


def _has_ffmpeg() -> bool:
    try:
        import imageio  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return False
    return True


def write_video(frames: list[np.ndarray], path: str | Path, fps: int = 25) -> Path:
    """Write ``frames`` (HxWx3 uint8 RGB) to ``path`` and return the path actually written.

    ``.mp4`` is honoured when imageio and imageio-ffmpeg are installed; otherwise (and for any
    other suffix) an animated GIF is written with Pillow and the suffix becomes ``.gif``.
    """
    _check_frames(frames)
    path = Path(path)
    use_mp4 = path.suffix.lower() == ".mp4" and _has_ffmpeg()
    if path.suffix.lower() == ".mp4" and not use_mp4:
        log.info("imageio/imageio-ffmpeg not installed: writing %s as a GIF instead of mp4", path.name)
    if not use_mp4:
        path = path.with_suffix(".gif")
    # The tmp name keeps the real suffix because ffmpeg picks the container from it.
    with atomic_path(path, suffix=path.suffix) as tmp:
        if use_mp4:
            import imageio.v2 as imageio

            imageio.mimwrite(tmp, list(frames), fps=fps, format="FFMPEG")
        else:
            from PIL import Image

            images = [Image.fromarray(f) for f in frames]
            # GIF durations are in ms; Pillow merges identical consecutive frames into one.
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                           duration=max(1, round(1000 / fps)), loop=0)
    return path
