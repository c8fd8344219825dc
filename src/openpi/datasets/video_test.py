"""PyAV encode/decode: seeking, forward decoding, the LRU of open files, concatenation, timestamp errors."""

import numpy as np
import pytest

from openpi.datasets import video
from openpi.shared import errors

FPS = 10


def frames(n: int, level: int) -> np.ndarray:
    """Frame t carries t in its brightness ramp, so a decoded frame can be identified."""
    out = np.full((n, 32, 32, 3), level, np.uint8)
    for t in range(n):
        out[t, :, : 4 * (t + 1)] = 250
    return out


def frame_id(image: np.ndarray) -> int:
    return round(float((image[16, :, 0] > 200).sum()) / 4) - 1


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    paths = []
    for k in range(3):
        path = root / f"clip{k}.mp4"
        video.encode_video(path, frames(8, 40 + 40 * k), fps=FPS)
        paths.append(path)
    return paths


def test_random_and_sequential_access(clips):
    decoder = video.VideoDecoder()
    order = [5, 0, 7, 3, 4, 5, 6, 1, 1]
    for t in order:
        image = decoder.frame(clips[0], t / FPS)
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        assert frame_id(image) == t
    assert video.video_info(clips[0]) == {"frames": 8, "last_timestamp": 0.7, "height": 32, "width": 32}


def test_lru_evicts_and_reopens(clips):
    decoder = video.VideoDecoder(max_open=2)
    for _ in range(2):
        for k, path in enumerate(clips):
            image = decoder.frame(path, 0.2)
            assert frame_id(image) == 2 and abs(int(image[0, 31, 1]) - (40 + 40 * k)) <= 4
    assert len(decoder._cache()) == 2
    decoder.close()
    assert len(decoder._cache()) == 0


def test_timestamp_errors(clips):
    decoder = video.VideoDecoder()
    with pytest.raises(errors.DatasetError, match=r"No frame of .*clip1.mp4 lies within 0.0001s of t=0.2500s"):
        decoder.frame(clips[1], 0.25)
    with pytest.raises(
        errors.DatasetError, match=r"t=0.9000s is past the end of .*clip1.mp4 \(last frame at 0.7000s\)"
    ):
        decoder.frame(clips[1], 0.9)
    assert frame_id(decoder.frame(clips[1], 0.3)) == 3  # the decoder recovers after an error


def test_concatenation_keeps_each_episode_addressable(tmp_path, clips):
    joined = video.VideoConcatenator(tmp_path / "joined.mp4")
    ranges = [joined.append(path, 8, FPS) for path in clips]
    joined.close()
    np.testing.assert_allclose(ranges, [(0.0, 0.8), (0.8, 1.6), (1.6, 2.4)])
    decoder = video.VideoDecoder()
    for k, (start, _) in enumerate(ranges):
        image = decoder.frame(tmp_path / "joined.mp4", start + 0.6)
        assert frame_id(image) == 6 and abs(int(image[0, 31, 1]) - (40 + 40 * k)) <= 4


def test_encoder_refuses_bad_frames_and_codecs(tmp_path):
    with pytest.raises(errors.DatasetError, match=r"must be uint8 \[T, 32, 32, 3\], got float32"):
        encoder = video.VideoEncoder(tmp_path / "a.mp4", fps=FPS, height=32, width=32, encoding=video.VideoEncoding())
        try:
            encoder.add(np.zeros((2, 32, 32, 3), np.float32))
        finally:
            encoder.close()
    with pytest.raises(errors.ConfigError, match="not available in this PyAV build"):
        video.VideoEncoder(tmp_path / "b.mp4", fps=FPS, height=32, width=32, encoding=video.VideoEncoding(codec="nope"))
