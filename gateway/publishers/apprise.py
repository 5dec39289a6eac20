"""The ``apprise`` publisher: any of Apprise's services (ntfy, Telegram, Matrix, email...).

Needs the optional extra: ``pip install 'things-gateway[apprise]'``.  Apprise is
imported only when this backend is built, so gateways that do not use it never pay
for it in memory.

Each post is one ``notify()`` call to every configured URL, with the images (and a
video, as an MP4 within ``max_video_bytes``) as attachments.  Apprise answers only
"worked" or "did not" (a bool), so any failure is a :class:`RetryableError`; after
``max_attempts`` the delivery is ``dead``.  A thread is one notification: its parts
joined by a blank line.  Apprise services have no idempotency keys: a retry after a
lost answer may notify twice.

URLs carry tokens, so they are secrets: never logged, never in errors.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from gateway.config.publishers import AppriseConfig
from gateway.model import (
    MediaItem,
    PermanentError,
    Post,
    Receipt,
    RetryableError,
    VideoLimits,
)
from gateway.publishers.base import (
    Capabilities,
    OneMessageThread,
    PublisherContext,
    fill_post_template,
)

if TYPE_CHECKING:
    import apprise

log = logging.getLogger(__name__)


def build(config: AppriseConfig, ctx: PublisherContext) -> ApprisePublisher:
    """Create the publisher (imports Apprise; no network)."""
    import apprise

    # Apprise's (and its HTTP library's) debug lines include full URLs, tokens and all.
    for name in ("apprise", "urllib3"):
        logging.getLogger(name).setLevel(max(logging.INFO, log.getEffectiveLevel()))
    notifier = apprise.Apprise()
    rejected = [n for n, url in enumerate(config.urls) if not notifier.add(url.get_secret_value())]
    # A service without attachments (syslog://, most chat bridges' text modes) would
    # drop the MP4 and send the text alone: with one among the URLs, the poster goes.
    takes_files = all(getattr(server, "attachment_support", False) for server in notifier)
    return ApprisePublisher(config, notifier, ctx.gateway_name, rejected, takes_video=takes_files)


class ApprisePublisher(OneMessageThread):
    """One ``notify()`` per post, with the images attached."""

    def __init__(
        self,
        config: AppriseConfig,
        notifier: apprise.Apprise,
        gateway: str,
        rejected: list[int] | None = None,
        *,
        takes_video: bool = True,
    ) -> None:
        """``takes_video``: every URL's service takes attachments (else a video goes
        as its poster frame, as with ``max_video_bytes = 0``)."""
        self.id = config.id
        video = (
            VideoLimits(max_bytes=config.max_video_bytes)
            if config.max_video_bytes and takes_video
            else None
        )
        self.capabilities = Capabilities(
            max_text=config.max_text,
            max_images=config.max_images,
            supports_language=False,
            video=video,
        )
        self._config = config
        self._notifier = notifier
        self._gateway = gateway
        self._rejected = rejected or []

    def publish_thread(
        self,
        post: Post,
        parts: tuple[str, ...],
        media: tuple[MediaItem, ...],
        idempotency_key: str,
    ) -> Receipt:
        """Send a whole thread as one notification, its parts joined by a blank line."""
        import apprise

        if self._rejected:
            numbers = ", ".join(f"urls[{n}]" for n in self._rejected)
            raise PermanentError(f"apprise: {numbers} not understood by Apprise")
        attach = apprise.AppriseAttachment([str(item.path) for item in media]) if media else None
        title = fill_post_template(self._config.title, post, self._gateway)
        options: dict[str, Any] = {"body_format": apprise.NotifyFormat.TEXT}
        ok = self._notifier.notify(
            body="\n\n".join(parts),
            title=title,
            attach=attach,
            timeout=self._config.timeout,
            **options,
        )
        if not ok:
            raise RetryableError("apprise: a service did not accept the notification")
        return Receipt(remote_id=post.id)

    def close(self) -> None:
        """Nothing to release (Apprise opens a connection per notification)."""


__all__ = ["AppriseConfig", "ApprisePublisher", "build"]
