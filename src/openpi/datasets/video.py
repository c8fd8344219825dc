"""Video frames in and out of mp4 files with PyAV.

Decoding: LeRobot stores camera streams as mp4 (AV1 by default) and addresses a frame by its timestamp
in the file. Random access seeks to the nearest keyframe at or before the timestamp and decodes
forward; a reader that asks for the next frames of the same file continues decoding without a new seek.
Open containers live in a small per-process LRU cache keyed by path, so each data-loader worker keeps
its own handles (PyAV containers must never be shared across processes). Frames come out as rgb24
through FFmpeg's swscale, the same conversion LeRobot's own decoders apply, so pixels match theirs.

Encoding: the writer uses SVT-AV1 (`libsvtav1`, bundled in the PyAV wheel) with yuv420p, a keyframe
every 2 frames and crf 30, which is LeRobot's own default; libdav1d decodes it. `libx264` (h264) is the
fallback choice for players without AV1 support.
"""

from __future__ import annotations

import collections
import dataclasses
import fractions
import os
import pathlib
import threading

import av
import numpy as np

from openpi.shared import errors

# LeRobot's tolerance between a requested and a decoded frame timestamp.
DEFAULT_TOLERANCE_S = 1e-4
# Continue decoding forward instead of seeking when the target is at most this many frames past the last
# decoded one. A seek costs at most one GOP of decoding (2 frames with LeRobot's g=2), so decoding further
# forward than a few frames is slower than seeking.
_FORWARD_DECODE_FRAMES = 3

# SVT-AV1 prints its configuration banner unless told otherwise; errors still get through.
os.environ.setdefault("SVT_LOG", "1")


@dataclasses.dataclass(frozen=True)
class VideoEncoding:
    """How the writer encodes camera streams (LeRobot's defaults)."""

    codec: str = "libsvtav1"
    pix_fmt: str = "yuv420p"
    gop: int = 2
    crf: int = 30
    preset: int | None = 12

    def options(self) -> dict[str, str]:
        opts = {"g": str(self.gop), "crf": str(self.crf)}
        if self.codec in ("libx264", "libx265"):
            opts["bf"] = "0"  # no B-frames: decode order == display order, so episodes concatenate cleanly
        if self.codec == "libx264":
            opts["x264-params"] = "log-level=error"
        if self.preset is not None and self.codec == "libsvtav1":
            opts["preset"] = str(self.preset)
        return opts

    @property
    def info_codec(self) -> str:
        """The codec name LeRobot records in info.json (`video.codec`)."""
        return {"libsvtav1": "av1", "libx264": "h264", "libx265": "hevc"}.get(self.codec, self.codec)


class _OpenVideo:
    """One open container plus the decoding position, so forward reads need no seek."""

    def __init__(self, path: pathlib.Path, threads: int = 1):
        self.path = path
        try:
            self.container = av.open(str(path))
            self.stream = self.container.streams.video[0]
        except (av.error.FFmpegError, IndexError) as exc:
            raise errors.DatasetError(
                f"Video file {path} cannot be opened as a video ({exc}); the file is corrupt or truncated, "
                "restore it from the original dataset."
            ) from exc
        # One decoding thread: random access then never waits on frame-thread pipelines after a seek, and
        # data loaders get their parallelism from several workers instead.
        self.stream.codec_context.thread_count = threads
        self.time_base = float(self.stream.time_base)
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.forward_limit_s = _FORWARD_DECODE_FRAMES / float(rate) if rate else 0.1
        self._frames = None  # live decode generator, positioned after `self.last_time`
        self.last_time: float | None = None
        self.last_frame: np.ndarray | None = None

    def close(self) -> None:
        self.container.close()

    def _seek(self, timestamp: float) -> None:
        target = round(timestamp / self.time_base)
        self.container.seek(max(target, 0), stream=self.stream, backward=True, any_frame=False)
        self._frames = self.container.decode(self.stream)
        self.last_time = None
        self.last_frame = None

    def frame_at(self, timestamp: float, tolerance_s: float) -> np.ndarray:
        if self.last_time is not None and abs(self.last_time - timestamp) <= tolerance_s:
            return self.last_frame
        forward_ok = (
            self._frames is not None
            and self.last_time is not None
            and self.last_time < timestamp <= self.last_time + self.forward_limit_s
        )
        if not forward_ok:
            self._seek(timestamp)
        try:
            return self._decode_until(timestamp, tolerance_s)
        except av.error.FFmpegError as exc:
            self._frames = None
            self.last_time = None
            raise errors.DatasetError(
                f"Decoding {self.path} at t={timestamp:.4f}s failed ({exc}); the file is corrupt, "
                "restore it from the original dataset."
            ) from exc

    def _decode_until(self, timestamp: float, tolerance_s: float) -> np.ndarray:
        previous: tuple[float, av.VideoFrame] | None = None
        for frame in self._frames:
            if frame.pts is None:
                continue
            t = frame.pts * self.time_base
            if t < timestamp - tolerance_s:
                previous = (t, frame)
                continue
            # Pick whichever of this frame and the one before is closer to the request.
            best_t, best = t, frame
            if previous is not None and abs(previous[0] - timestamp) < abs(t - timestamp):
                best_t, best = previous
            if abs(best_t - timestamp) > tolerance_s:
                self._frames = None
                self.last_time = None
                raise errors.DatasetError(
                    f"No frame of {self.path} lies within {tolerance_s}s of t={timestamp:.4f}s (nearest at "
                    f"{best_t:.4f}s); the timestamps in the dataset do not match the video, check its fps "
                    "and the episode's from/to timestamps."
                )
            self.last_time = t
            self.last_frame = frame.to_ndarray(format="rgb24")
            if best is not frame:
                return previous[1].to_ndarray(format="rgb24")
            return self.last_frame
        last = f"{previous[0]:.4f}s" if previous is not None else "no frame at all"
        self._frames = None
        self.last_time = None
        raise errors.DatasetError(
            f"t={timestamp:.4f}s is past the end of {self.path} (last frame at {last}); the episode's "
            "timestamps do not fit its video, so the video is truncated or the metadata is wrong."
        )


class VideoDecoder:
    """LRU cache of open videos per process and thread; `frame(path, t)` gives the rgb24 frame at t (uint8 HWC).

    Each thread (thread-pool data loaders) and each forked process gets its own handles, so decoding runs
    in parallel and no FFmpeg state is ever shared.
    """

    def __init__(self, max_open: int = 16, tolerance_s: float = DEFAULT_TOLERANCE_S, threads: int = 1):
        self.max_open = max_open
        self.tolerance_s = tolerance_s
        self.threads = threads
        self._local = threading.local()

    def _cache(self) -> collections.OrderedDict[pathlib.Path, _OpenVideo]:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():  # new thread, or a forked worker: fresh handles
            local.pid = os.getpid()
            local.open = collections.OrderedDict()
        return local.open

    def _get(self, path: pathlib.Path) -> _OpenVideo:
        cache = self._cache()
        video = cache.get(path)
        if video is not None:
            cache.move_to_end(path)
            return video
        if not path.is_file():
            raise errors.DatasetError(
                f"Video file {path} is missing; restore the dataset's videos/ folder (or re-download it)."
            )
        video = _OpenVideo(path, self.threads)
        cache[path] = video
        while len(cache) > self.max_open:
            _, old = cache.popitem(last=False)
            old.close()
        return video

    def frame(self, path: str | os.PathLike, timestamp: float) -> np.ndarray:
        return self._get(pathlib.Path(path)).frame_at(float(timestamp), self.tolerance_s)

    def close(self) -> None:
        """Closes this thread's open files."""
        cache = self._cache()
        for video in cache.values():
            video.close()
        cache.clear()

    def __getstate__(self):  # picklable for worker processes: handles are reopened there
        return {"max_open": self.max_open, "tolerance_s": self.tolerance_s, "threads": self.threads}

    def __setstate__(self, state):
        self.__init__(**state)


def video_info(path: str | os.PathLike) -> dict[str, float | int]:
    """Number of frames, duration and size of the first video stream (for validation and tests)."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            times = [float(p.pts * stream.time_base) for p in container.demux(stream) if p.pts is not None]
            return {
                "frames": len(times),
                "last_timestamp": max(times) if times else -1.0,
                "height": stream.codec_context.height,
                "width": stream.codec_context.width,
            }
    except (av.error.FFmpegError, IndexError) as exc:
        raise errors.DatasetError(f"Video file {path} cannot be read ({exc}); it is corrupt or truncated.") from exc


class VideoEncoder:
    """Appends rgb24 frames to one mp4 at a fixed fps; several episodes may go into one file (v3.0)."""

    def __init__(self, path: pathlib.Path, *, fps: int, height: int, width: int, encoding: VideoEncoding):
        self.path = path
        self.fps = fps
        self.height, self.width = height, width
        self.num_frames = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(path), "w")
        try:
            self._stream = self._container.add_stream(encoding.codec, rate=fps, options=encoding.options())
        except (av.error.FFmpegError, ValueError) as exc:
            self._container.close()
            raise errors.ConfigError(
                f"Video codec {encoding.codec!r} is not available in this PyAV build ({exc}); use 'libsvtav1' "
                "or 'libx264'."
            ) from exc
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = encoding.pix_fmt

    def add(self, frames: np.ndarray) -> None:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3) or frames.dtype != np.uint8:
            raise errors.DatasetError(
                f"Frames for {self.path} must be uint8 [T, {self.height}, {self.width}, 3], got "
                f"{frames.dtype} {list(frames.shape)}; convert them (HWC, RGB) before writing."
            )
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.num_frames
            frame.time_base = fractions.Fraction(1, self.fps)
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
            self.num_frames += 1

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()


class VideoConcatenator:
    """Appends whole mp4 files (same codec and size) to one output by remuxing, without re-encoding.

    v3.0 keeps many episodes in one video file. Each episode is encoded on its own (so it starts at a
    keyframe and its size is known) and then appended here with its timestamps shifted past the previous
    episodes, which is how LeRobot builds its files too.
    """

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.duration_s = 0.0
        self.num_frames = 0
        self.bytes_written = 0
        self._container = None
        self._stream = None

    def append(self, episode_path: pathlib.Path, num_frames: int, fps: int) -> tuple[float, float]:
        """Appends one episode file; returns its (from_timestamp, to_timestamp) inside the output."""
        with av.open(str(episode_path)) as source:
            in_stream = source.streams.video[0]
            if self._container is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._container = av.open(str(self.path), "w")
                self._stream = self._container.add_stream_from_template(in_stream, opaque=True)
            offset = round(self.duration_s / in_stream.time_base)
            for packet in source.demux(in_stream):
                if packet.size == 0:
                    continue
                if packet.pts is not None:
                    packet.pts += offset
                if packet.dts is not None:
                    packet.dts += offset
                packet.stream = self._stream
                self.bytes_written += packet.size
                self._container.mux(packet)
        start = self.duration_s
        self.num_frames += num_frames
        self.duration_s = self.num_frames / fps
        return start, self.duration_s

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def encode_video(
    path: str | os.PathLike, frames: np.ndarray, *, fps: int, encoding: VideoEncoding = VideoEncoding()
) -> None:
    """Encodes `frames` (uint8 [T, H, W, 3]) into a new mp4 at `path`."""
    frames = np.asarray(frames)
    encoder = VideoEncoder(
        pathlib.Path(path), fps=fps, height=frames.shape[1], width=frames.shape[2], encoding=encoding
    )
    try:
        encoder.add(frames)
    finally:
        encoder.close()
