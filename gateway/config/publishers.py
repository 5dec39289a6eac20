"""``[[publishers]]`` entries: every backend's config, keyed by ``type``.

The config of a backend lives here, as data; its behaviour lives in
``gateway/publishers/<type>.py``, whose ``build(config, ctx)`` makes the publisher
(see :func:`gateway.publishers.build_publisher`).  Keeping the configs in the config
package lets a file be checked without importing any backend.  To add a backend,
add its config class here and to :data:`AnyPublisherConfig`; :data:`PUBLISHER_TYPES`
follows by itself.
"""

from __future__ import annotations

import importlib.util
import os
import string
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, ClassVar, Literal, get_args

from pydantic import BaseModel, Field, SecretStr, field_validator

from gateway.config.durations import Duration
from gateway.config.sections import TABLE_CONFIG, Size

POST_TEMPLATE_FIELDS = frozenset({"rule", "gateway"})
"""The placeholders a publisher's own small templates (MQTT topic, Apprise title) may use."""


def check_post_template(template: str, what: str) -> str:
    """Validate a ``{rule}``/``{gateway}`` template (``what`` names it in errors)."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"bad {what} template: {exc}") from None
    unknown = names - POST_TEMPLATE_FIELDS
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {sorted(unknown)} in the {what}; use {{rule}} or {{gateway}}"
        )
    return template


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """How to reach an MQTT broker (the gateway's own ``[mqtt]`` broker by default)."""

    host: str = "localhost"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    protocol: int = 5
    keepalive: int = 60

    def __repr__(self) -> str:
        # Never show the password, even in a debugger or a log line.
        return f"BrokerSettings(host={self.host!r}, port={self.port}, username={self.username!r})"


class PublisherConfig(BaseModel):
    """Fields every publisher config shares."""

    model_config = TABLE_CONFIG

    id: str = Field(
        pattern=r"^[A-Za-z0-9_-]{1,64}\Z",
        description="Name rules use in `publish_to`; also the outbox key.",
    )
    enabled: bool = Field(
        default=True, description="Set false to keep the config but post nothing."
    )
    max_attempts: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="Give a delivery up (`dead`) after this many failed attempts.",
    )
    give_up_after: Duration = Field(
        default=timedelta(days=3),
        description="Give a delivery up (`dead`) when it fails and its post is older than this.",
    )
    max_per_day: int | None = Field(
        default=None,
        ge=1,
        description="Posting budget: at most this many posts sent per day (local midnight to "
        "midnight in the gateway's time zone); more wait for the next day.",
    )
    min_interval: Duration | None = Field(
        default=None,
        description="Leave at least this long between two posts sent to this publisher.",
    )

    requires: ClassVar[tuple[tuple[str, str], ...]] = ()
    """(module, extra) pairs this backend imports when built, e.g. ("oauthlib", "x")."""

    def missing_dependencies(self) -> list[str]:
        """One message per optional dependency that is not installed."""
        return [
            f"needs the {module!r} package: pip install 'things-gateway[{extra}]'"
            for module, extra in self.requires
            if importlib.util.find_spec(module) is None
        ]


class HttpConfig(PublisherConfig):
    """Fields every HTTP backend shares."""

    timeout: float = Field(
        default=30.0,
        gt=0,
        le=300,
        description="Seconds to wait for each request's answer (and at most 10 to connect).",
    )


class ConsoleConfig(PublisherConfig):
    """Print posts to stdout (the journal, under systemd)."""

    type: Literal["console"] = Field(description="Selects this backend.")
    show_media: bool = Field(default=True, description="List attached image files below the text.")


class FileConfig(PublisherConfig):
    """Append every post to a JSON-lines archive with its images beside it."""

    type: Literal["file"] = Field(description="Selects this backend.")
    path: str = Field(
        default="posts",
        description="Archive folder; relative paths are under the gateway's state_dir.",
    )
    site: bool = Field(
        default=False,
        description="Also keep a static site (index, permalinks, feeds) in the archive folder.",
    )
    site_title: str = Field(default="", max_length=200, description="The site's title.")
    per_page: int = Field(default=20, ge=1, le=500, description="Posts per site page.")
    site_url: str = Field(
        default="",
        pattern=r"^(https?://\S+)?\Z",
        description="Public address of the archive folder; makes feed links absolute.",
    )


def filters_overlap(a: str, b: str) -> bool:
    """True when some topic matches both MQTT topic filters (``+``/``#`` allowed)."""
    left, right = a.split("/"), b.split("/")
    for x, y in zip(left, right, strict=False):
        if x == "#" or y == "#":
            return True
        if x != y and "+" not in (x, y):
            return False
    rest = left[len(right) :] or right[len(left) :]
    # "a/#" also matches "a" itself.
    return not rest or rest == ["#"]


STATE_DIR_OWN_NAMES = ("media", "gateway.db", "state.json", "things-gateway.pid")
"""What the gateway itself keeps in ``state_dir`` (``gateway.db`` with its -wal/-shm):
an archive folder must not be one of them, nor inside one (retention prunes
``media/``; the archive is never pruned)."""


def archive_path_problem(path: str, state_dir: Path) -> str | None:
    """Why a ``file`` publisher's ``path`` cannot be used, or None when it can.

    A relative path stays under ``state_dir`` (no ``..``) and clear of the gateway's
    own files; an absolute one is the explicit way to archive elsewhere, but may
    neither hold ``state_dir`` nor sit inside the gateway's own files.
    """
    given = Path(path)
    if not given.is_absolute():
        if ".." in given.parts:
            return (
                f"{path!r} escapes state_dir with '..'; write an absolute path to "
                "archive outside state_dir"
            )
        inside: Path | None = given
    else:
        state, target = Path(os.path.normpath(state_dir)), Path(os.path.normpath(given))
        if state == target or state.is_relative_to(target):
            return f"{path!r} contains state_dir ({state_dir}): the archive needs its own folder"
        inside = target.relative_to(state) if target.is_relative_to(state) else None
    if inside is None:
        return None
    parts = Path(os.path.normpath(inside)).parts
    if not parts or parts[0] == ".":
        return f"{path!r} is state_dir itself: the archive needs its own folder"
    first = parts[0]
    if any(first == own or first.startswith(f"{own}-") for own in STATE_DIR_OWN_NAMES):
        return f"{path!r} overlaps the gateway's own {first!r} in state_dir"
    return None


class WebhookConfig(HttpConfig):
    """POST posts to any HTTP endpoint (Home Assistant, n8n, Slack-style relays...)."""

    type: Literal["webhook"] = Field(description="Selects this backend.")
    url: SecretStr = Field(
        description="Endpoint to POST to (http or https); kept secret because many embed a token."
    )
    format: Literal["json", "multipart"] = Field(
        default="json",
        description="`json`: one JSON object, no image bytes; `multipart`: JSON `payload` "
        "part plus one `media` file part per image.",
    )
    secret: SecretStr | None = Field(
        default=None,
        description="When set, sign the body with HMAC-SHA256 in `signature_header`.",
    )
    signature_header: str = Field(
        default="X-Signature-256",
        pattern=r"^[A-Za-z0-9-]{1,64}\Z",
        description="Header carrying `sha256=<hex HMAC of the body>`.",
    )
    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Extra request headers (e.g. Authorization); values are kept secret.",
    )
    max_images: int = Field(default=4, ge=0, le=16, description="Images per post to send.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


class MqttConfig(PublisherConfig):
    """Publish posts to an MQTT topic (Home Assistant, Node-RED, a display...)."""

    type: Literal["mqtt"] = Field(description="Selects this backend.")
    topic: str = Field(
        default="things-gateway/{gateway}/{rule}/post",
        min_length=1,
        description="Topic for the post's JSON; `{rule}` and `{gateway}` are filled in.",
    )
    qos: Literal[0, 1, 2] = Field(default=1, description="QoS of every message sent.")
    retain: bool = Field(default=False, description="Publish retained messages.")
    images: Literal["separate", "omit"] = Field(
        default="separate",
        description="`separate`: each image as a binary message on `<topic>/image/<n>`; "
        "`omit`: send no image bytes.",
    )
    max_images: int = Field(default=4, ge=0, le=16, description="Images per post to send.")
    host: str | None = Field(
        default=None, description="Broker host; default: the gateway's [mqtt] broker."
    )
    port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Broker port; default: [mqtt] port (with host unset) or 1883.",
    )
    username: str | None = Field(default=None, description="Broker user name (with `host`).")
    password: SecretStr | None = Field(default=None, description="Broker password (with `host`).")
    protocol: Literal[5, 311] | None = Field(
        default=None, description="MQTT protocol version; default: the [mqtt] one."
    )
    client_id: str | None = Field(
        default=None, description="Client id; default `<gateway name>-<publisher id>`."
    )
    timeout: float = Field(
        default=10.0, gt=0, le=300, description="Seconds to wait for the broker to confirm."
    )

    @field_validator("topic")
    @classmethod
    def _topic_template(cls, value: str) -> str:
        if "+" in value or "#" in value:
            raise ValueError("a topic to publish to cannot contain + or #")
        return check_post_template(value, "topic")

    def topics_for(self, rule_id: str, gateway: str) -> tuple[str, str]:
        """The topic a post of ``rule_id`` goes to, and the filter of its image topics."""
        topic = self.topic.format(rule=rule_id, gateway=gateway)
        return topic, f"{topic}/image/+"

    def broker(self, default: BrokerSettings) -> BrokerSettings:
        """The broker to connect to: this config's ``host``, else the gateway's."""
        if self.host is None:
            return BrokerSettings(
                host=default.host,
                port=self.port or default.port,
                username=default.username,
                password=default.password,
                protocol=self.protocol or default.protocol,
                keepalive=default.keepalive,
            )
        return BrokerSettings(
            host=self.host,
            port=self.port or 1883,
            username=self.username,
            password=self.password.get_secret_value() if self.password else None,
            protocol=self.protocol or 5,
        )


class MastodonConfig(HttpConfig):
    """Post to a Mastodon (or Mastodon-API compatible) account."""

    type: Literal["mastodon"] = Field(description="Selects this backend.")
    base_url: str = Field(
        pattern=r"^https?://[^/\s]+(/[^\s]*)?\Z",
        description="The server's address, e.g. `https://mastodon.social`.",
    )
    access_token: SecretStr = Field(
        description="A user access token with the `write:statuses` and `write:media` scopes."
    )
    visibility: Literal["public", "unlisted", "private", "direct"] = Field(
        default="unlisted",
        description="Who sees the posts; many servers ask bots that post often to use `unlisted`.",
    )
    spoiler_text: str = Field(
        default="", max_length=500, description="Content warning shown above every post."
    )
    sensitive: bool = Field(default=False, description="Mark attached images as sensitive.")
    media_poll_interval: float = Field(
        default=1.0, gt=0, le=60, description="Seconds between checks of a processing upload."
    )
    media_timeout: float = Field(
        default=60.0,
        gt=0,
        le=900,
        description="Give up waiting for an upload to process after this long (retried later).",
    )


class BlueskyConfig(HttpConfig):
    """Post to a Bluesky (AT Protocol) account with an app password."""

    type: Literal["bluesky"] = Field(description="Selects this backend.")
    handle: str = Field(
        min_length=3, description="The account's handle (e.g. `poolcam.bsky.social`) or DID."
    )
    app_password: SecretStr = Field(
        description="An app password (Settings → App passwords), not the account password."
    )
    service: str = Field(
        default="https://bsky.social",
        pattern=r"^https?://[^/\s]+/?\Z",
        description="The account's PDS (or entryway); change it for a self-hosted PDS.",
    )
    app_url: str = Field(
        default="https://bsky.app",
        description="Web app used to build the links in receipts.",
    )


class XConfig(HttpConfig):
    """Post to an X account through API v2 (OAuth 1.0a user context: four secrets)."""

    type: Literal["x"] = Field(description="Selects this backend.")
    requires: ClassVar[tuple[tuple[str, str], ...]] = (("oauthlib", "x"),)
    consumer_key: SecretStr = Field(description="The app's API key (consumer key).")
    consumer_secret: SecretStr = Field(description="The app's API key secret.")
    access_token: SecretStr = Field(description="The posting account's access token.")
    access_token_secret: SecretStr = Field(description="The posting account's access secret.")
    api_base: str = Field(
        default="https://api.x.com",
        pattern=r"^https?://[^/\s]+/?\Z",
        description="API address; only tests change it.",
    )
    web_url: str = Field(
        default="https://x.com", description="Site used to build the links in receipts."
    )
    read_mentions: bool = Field(
        default=False,
        description=(
            "Read the account's mentions for [conversations] (GET /2/users/:id/mentions);"
            " needs a paid X API tier (the free tier cannot read), so it is off by default."
        ),
    )
    mentions_interval: Duration = Field(
        default=timedelta(seconds=150),
        description="Read mentions at most this often, whatever [conversations]"
        " poll_interval says: Basic access allows 10 reads per 15 minutes (one per 90 s).",
    )


class AppriseConfig(PublisherConfig):
    """Notify through Apprise URLs, e.g. ``ntfys://ntfy.sh/my-topic`` or ``tgram://...``."""

    requires: ClassVar[tuple[tuple[str, str], ...]] = (("apprise", "apprise"),)

    type: Literal["apprise"] = Field(description="Selects this backend.")
    urls: list[SecretStr] = Field(
        min_length=1,
        description='Apprise URLs to notify, e.g. ["${NTFY_URL}"]; secret (they carry tokens).',
    )
    title: str = Field(
        default="{gateway}: {rule}",
        description="Notification title; `{rule}` and `{gateway}` are filled in."
        ' Default "{gateway}: {rule}"; empty: none.',
    )
    max_text: int | None = Field(
        default=None, ge=1, description="Longest text to send, in characters (None: no limit)."
    )
    max_images: int = Field(default=4, ge=0, le=16, description="Images per post to attach.")
    max_video_bytes: Size = Field(
        default=15_000_000,
        description="A video (MP4) is attached when it fits in this many bytes, re-encoded "
        "to fit if not; 0 attaches its poster frame instead. Default 15 MB: ntfy's "
        "attachment limit (Telegram bots take 50 MB, Discord 10 MB, e-mail often 25 MB).",
    )
    timeout: float = Field(
        default=30.0, gt=0, le=300, description="Seconds to wait for the services to answer."
    )

    @field_validator("title")
    @classmethod
    def _title_template(cls, value: str) -> str:
        return check_post_template(value, "title")


AnyPublisherConfig = (
    ConsoleConfig
    | FileConfig
    | WebhookConfig
    | MqttConfig
    | MastodonConfig
    | BlueskyConfig
    | XConfig
    | AppriseConfig
)
"""Every backend's config class."""

PublisherConfigs = Annotated[AnyPublisherConfig, Field(discriminator="type")]
"""The ``[[publishers]]`` entries: a union keyed by ``type``."""

PUBLISHER_TYPES: tuple[str, ...] = tuple(
    get_args(cls.model_fields["type"].annotation)[0] for cls in get_args(AnyPublisherConfig)
)
"""Every ``type`` value, used to drop the union tag from error paths."""
