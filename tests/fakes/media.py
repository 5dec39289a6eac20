"""Real JPEG files for the publisher tests."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from gateway.model import MediaItem


def jpeg(folder: Path, name: str, size: tuple[int, int], alt: str) -> MediaItem:
    """Write a real JPEG (a colour gradient) and describe it as a MediaItem."""
    width, height = size
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    path = folder / name
    image.save(path, "JPEG", quality=80)
    return MediaItem(path, "image/jpeg", width, height, path.stat().st_size, alt)


def mp4(
    folder: Path, name: str, alt: str, *, frames: int = 12, size: tuple[int, int] = (160, 90)
) -> MediaItem:
    """Encode a real H.264 MP4 (and its poster) with the gateway's encoder."""
    from gateway.media.attachments import video_item
    from gateway.media.video import encode_frames, write_poster

    images = (
        Image.linear_gradient("L").resize(size).convert("RGB").rotate(n * 10) for n in range(frames)
    )
    out = encode_frames(images, folder / name, fps=4)
    return video_item(out, write_poster(out.path, out.path.with_suffix(".poster.jpg")), alt)


def video_facts(data: bytes) -> tuple[int, dict[str, object]]:
    """What a service reads from an uploaded MP4 (decoded with PyAV): frame count, and
    codec, size and duration; raises ValueError for bytes that are no video."""
    import io

    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            count = sum(1 for _ in container.decode(stream))
            return count, {
                "codec": stream.codec_context.name,
                "width": stream.codec_context.width,
                "height": stream.codec_context.height,
                "duration": float(container.duration or 0) / 1_000_000,
            }
    except (av.FFmpegError, IndexError) as exc:
        raise ValueError(f"not a video: {exc}") from exc
