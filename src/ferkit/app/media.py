"""Videos browsers can play: OpenCV writes MPEG-4 Part 2 ('mp4v'), which browsers refuse, so the annotated
video is re-encoded to H.264 (yuv420p, moov atom first) with PyAV, which streamlit-webrtc already brings."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av

BROWSER_CRF = "23"  # x264's default quality; annotated boxes and text stay sharp


def to_browser_video(src: str | Path, dst: str | Path) -> Path:
    """Re-encode ``src`` to an H.264 MP4 at ``dst`` with the same frame rate (odd sizes are cropped by a pixel)."""
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp.mp4")
    try:
        _encode(Path(src), tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(dst)
    return dst


def _encode(src: Path, dst: Path) -> None:
    with av.open(str(src)) as inp:
        vin = inp.streams.video[0]
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        with av.open(str(dst), "w", options={"movflags": "+faststart"}) as out:
            vout = out.add_stream("libx264", rate=rate)
            vout.pix_fmt = "yuv420p"
            vout.options = {"crf": BROWSER_CRF, "preset": "veryfast"}
            vout.width, vout.height = vin.codec_context.width // 2 * 2, vin.codec_context.height // 2 * 2
            for frame in inp.decode(vin):
                rgb = frame.to_ndarray(format="rgb24")[: vout.height, : vout.width]  # (H, W, 3)
                for packet in vout.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    out.mux(packet)
            for packet in vout.encode():
                out.mux(packet)
