"""The whole configuration file: :class:`GatewayConfig`, loading it, its error lines.

Load order (later wins): the TOML file, then environment variables prefixed
``THINGS_GATEWAY_`` with ``__`` for nesting (``THINGS_GATEWAY_MQTT__HOST``).
Any string may be ``"${NAME}"`` (:mod:`gateway.config.secrets`).  Unknown keys are
errors.  Every problem is reported as one line naming its path, e.g.
``sensors[1].topic: Field required``; values are never echoed, so secrets stay out
of logs.

What only the rule engine and the composer can judge (conditions, cron lines, quiet
hours, templates) is checked by the :class:`EngineChecks` given to
:func:`load_config`/:func:`validate_config`; everything that runs a config passes
the engine's own (:func:`gateway.runtime.loading.load_config`).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.config.cameras import CAMERA_SOURCES, AnyCameraConfig, CameraConfigs
from gateway.config.conversations import ConversationsSection, ReplyConfig
from gateway.config.onepass import validate_in_one_pass
from gateway.config.publishers import (
    PUBLISHER_TYPES,
    FileConfig,
    MqttConfig,
    PublisherConfigs,
    archive_path_problem,
    filters_overlap,
)
from gateway.config.rules import RuleChecks, RuleConfig, active_checks, checking_with
from gateway.config.secrets import (
    credentials_beside,
    mask_read_values,
    register_secret,
    resolve_refs,
)
from gateway.config.sections import (
    GatewaySection,
    HealthSection,
    HomeAssistantSection,
    MediaSection,
    MqttSection,
    StateSection,
    WebSection,
)
from gateway.config.sensors import SensorConfig

DEFAULT_CONFIG_PATH = Path("/etc/things-gateway/gateway.toml")
CONFIG_ENV = "THINGS_GATEWAY_CONFIG"
ENV_PREFIX = "THINGS_GATEWAY_"

_unresolved: ContextVar[tuple[list[str], list[str], dict[str, str]] | None] = ContextVar(
    "gateway_unresolved", default=None
)
"""Where the validation in progress records ``${NAME}`` it cannot resolve: those that
matter, and those of disabled tables."""


@runtime_checkable
class EngineChecks(RuleChecks, Protocol):
    """Every check the config package cannot make alone (see :class:`RuleChecks`)."""

    def config_problems(self, config: GatewayConfig) -> Iterable[str]:
        """``rules[i].field: message`` lines: unknown sensors, template errors..."""
        ...


class GatewayConfig(BaseSettings):
    """The whole configuration file."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        nested_model_default_partial_update=True,
        regex_engine="python-re",
    )

    gateway: GatewaySection = Field(default_factory=GatewaySection, description="[gateway]")
    mqtt: MqttSection = Field(default_factory=MqttSection, description="[mqtt]")
    state: StateSection = Field(default_factory=StateSection, description="[state]")
    media: MediaSection = Field(default_factory=MediaSection, description="[media]")
    sensors: tuple[SensorConfig, ...] = Field(default=(), description="[[sensors]]")
    cameras: tuple[CameraConfigs, ...] = Field(default=(), description="[[cameras]]")
    rules: tuple[RuleConfig, ...] = Field(default=(), description="[[rules]]")
    publishers: tuple[PublisherConfigs, ...] = Field(default=(), description="[[publishers]]")
    health: HealthSection = Field(default_factory=HealthSection, description="[health]")
    homeassistant: HomeAssistantSection = Field(
        default_factory=HomeAssistantSection, description="[homeassistant]"
    )
    web: WebSection = Field(default_factory=WebSection, description="[web]")
    conversations: ConversationsSection = Field(
        default_factory=ConversationsSection, description="[conversations]"
    )
    replies: tuple[ReplyConfig, ...] = Field(default=(), description="[[replies]]")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment variables override the file; no dotenv, no secrets dir."""
        return (env_settings, init_settings)

    @model_validator(mode="before")
    @classmethod
    def _resolve_secret_refs(cls, data: Any) -> Any:
        errors: list[str] = []
        quiet: list[str] = []
        report = _unresolved.get()
        resolved = resolve_refs(data, "", errors, quiet, report[2] if report else None)
        if report is not None:  # validate_config decides what a missing secret means
            report[0].extend(e for e in errors if e not in report[0])
            report[1].extend(e for e in quiet if e not in report[1])
        elif errors:
            raise PydanticCustomError("unresolved", "\n".join(errors))
        return resolved

    @model_validator(mode="after")
    def _cross_references(self) -> GatewayConfig:
        problems = list(_reference_problems(self))
        if problems:
            raise PydanticCustomError("reference", "\n".join(problems))
        return self

    def rule(self, rule_id: str) -> RuleConfig:
        """The rule with this id (KeyError if none)."""
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    def camera(self, camera_id: str) -> AnyCameraConfig:
        """The camera with this id (KeyError if none)."""
        for camera in self.cameras:
            if camera.id == camera_id:
                return camera
        raise KeyError(camera_id)

    def sensor_for(self, sensor_id: str) -> SensorConfig | None:
        """The ``[[sensors]]`` entry that makes ``sensor_id``: the one with that id, else
        the first whose captures produce it (``temp_{room}`` for ``temp_kitchen``)."""
        found = self._sensors_by_id.get(sensor_id)
        if found is not None:
            return found
        for sensor in self._capturing_sensors:
            if sensor.makes(sensor_id):
                return sensor
        return None

    # Made once per config: start-up looks up every restored sensor (10,000 of them
    # took 3 s through a scan of the list each).
    @cached_property
    def _sensors_by_id(self) -> dict[str, SensorConfig]:
        by_id: dict[str, SensorConfig] = {}
        for sensor in self.sensors:
            by_id.setdefault(sensor.id, sensor)
        return by_id

    @cached_property
    def _capturing_sensors(self) -> tuple[SensorConfig, ...]:
        return tuple(s for s in self.sensors if s.captures)

    def sensor_windows(self) -> dict[str, tuple[timedelta, ...]]:
        """Each sensor's rolling statistics windows: its own, else ``[state] windows``."""
        return {
            s.id: tuple(s.windows if s.windows is not None else self.state.windows)
            for s in self.sensors
        }


def _duplicates(kind: str, ids: list[str]) -> Iterator[str]:
    seen: set[str] = set()
    for index, item in enumerate(ids):
        if item in seen:
            yield f"{kind}[{index}].id: duplicate id {item!r}"
        seen.add(item)


def _reference_problems(config: GatewayConfig) -> Iterator[str]:
    yield from _duplicates("sensors", [s.id for s in config.sensors])
    yield from _duplicates("cameras", [c.id for c in config.cameras])
    yield from _duplicates("rules", [r.id for r in config.rules])
    yield from _duplicates("publishers", [p.id for p in config.publishers])
    cameras = {c.id for c in config.cameras}
    sensors = {s.id for s in config.sensors}
    publishers = {p.id for p in config.publishers}
    for r, rule in enumerate(config.rules):
        for p, target in enumerate(rule.publish_to):
            if target not in publishers:
                yield f"rules[{r}].publish_to[{p}]: no publisher with id {target!r}"
        for i, image in enumerate(rule.images):
            if image.camera not in cameras:
                yield f"rules[{r}].images[{i}].camera: no camera with id {image.camera!r}"
        for i, chart in enumerate(rule.charts):
            if chart.sensor not in sensors:
                yield f"rules[{r}].charts[{i}].sensor: no sensor with id {chart.sensor!r}"
        if rule.timelapse is not None and rule.timelapse.camera not in cameras:
            yield f"rules[{r}].timelapse.camera: no camera with id {rule.timelapse.camera!r}"
        if rule.clip is not None and rule.clip.camera not in cameras:
            yield f"rules[{r}].clip.camera: no camera with id {rule.clip.camera!r}"
    for p, publisher in enumerate(config.publishers):
        if publisher.enabled:
            yield from (f"publishers[{p}]: {m}" for m in publisher.missing_dependencies())
        if isinstance(publisher, MqttConfig) and publisher.enabled:
            yield from _post_loops(config, p, publisher)
        if isinstance(publisher, FileConfig):
            problem = archive_path_problem(publisher.path, config.gateway.resolved_state_dir())
            if problem:
                yield f"publishers[{p}].path: {problem}"
    checks = active_checks()
    if isinstance(checks, EngineChecks):
        yield from checks.config_problems(config)


def _post_loops(config: GatewayConfig, index: int, publisher: MqttConfig) -> Iterator[str]:
    """An mqtt publisher writing where an ``on_message`` rule listens: a post loop.

    Checked for any broker: the same broker may be reached by two names.
    """
    triggers = [(r, rule) for r, rule in enumerate(config.rules) if rule.on_message is not None]
    senders = [rule.id for rule in config.rules if publisher.id in rule.publish_to]
    for rule_id in senders:
        for topic in publisher.topics_for(rule_id, config.gateway.name):
            for r, rule in triggers:
                assert rule.on_message is not None
                if filters_overlap(rule.on_message.topic, topic):
                    yield (
                        f"publishers[{index}].topic: rule {rule_id!r} posts to {topic!r}, "
                        f"which rules[{r}].on_message.topic {rule.on_message.topic!r} "
                        "listens to: each post would fire the rule again"
                    )
                    return


class ConfigError(Exception):
    """The config cannot be used; ``errors`` holds one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


_UNION_TAGS: dict[int | str, tuple[str, ...]] = {
    "publishers": PUBLISHER_TYPES,
    "cameras": CAMERA_SOURCES,
}


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i > 0 and isinstance(loc[i - 1], int) and part in _UNION_TAGS.get(loc[0], ()):
            continue  # a discriminated union's tag, not a key the user wrote
        else:
            out += f".{part}" if out else str(part)
    return out


_SUBPATH = re.compile(r"^[A-Za-z_]\w*(\[\d+\])*: ")


def format_validation_error(error: ValidationError) -> list[str]:
    """One line per problem, ``path: message``, never echoing the input value."""
    return format_error_items(error.errors(include_input=False, include_url=False))


def format_error_items(items: list[ErrorDetails]) -> list[str]:
    """:func:`format_validation_error` of some of an error's items."""
    lines = []
    for item in items:
        loc = _format_loc(tuple(item["loc"]))
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        for part in message.split("\n"):
            if loc and _SUBPATH.match(part):
                lines.append(f"{loc}.{part}")  # a model check naming one of its fields
            elif loc and not part.startswith(f"{loc}"):
                lines.append(f"{loc}: {part}")
            else:
                lines.append(part)
    return lines


def config_path(explicit: str | Path | None) -> Path:
    """``-c PATH``, else ``$THINGS_GATEWAY_CONFIG``, else the system default."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get(CONFIG_ENV)
    return Path(from_env) if from_env else DEFAULT_CONFIG_PATH


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a missing file or syntax error is a ConfigError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file: {exc.strerror}"]) from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: config file is not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: TOML syntax error: {exc}"]) from None


def load_config(
    path: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    checks: EngineChecks | None = None,
    missing_secrets: list[str] | None = None,
) -> GatewayConfig:
    """Read, resolve and validate a config file; raise ConfigError listing every problem.

    Without ``checks`` only the shape is checked: types, ranges, ids, references
    between ids and ``${NAME}`` references.  Secrets are also looked for in
    ``credentials/`` beside the file when ``$CREDENTIALS_DIRECTORY`` is not set
    (:func:`gateway.config.secrets.lookup_secret`); ``missing_secrets``: see
    :func:`validate_config`.
    """
    file = config_path(path)
    data = read_toml(file)
    if overrides:
        data = _deep_merge(data, overrides)
    with credentials_beside(file):
        return validate_config(data, checks=checks, missing_secrets=missing_secrets)


def validate_config(
    data: Mapping[str, Any],
    *,
    checks: EngineChecks | None = None,
    missing_secrets: list[str] | None = None,
) -> GatewayConfig:
    """Validate an already-parsed config mapping (plus env overrides), as load_config does.

    Every problem is reported at once (:mod:`.onepass`).  A ``${NAME}`` that cannot be
    resolved is an error, unless ``missing_secrets`` is given: then its line is added
    there and the value is empty, for commands that never use secrets.
    """
    unresolved: list[str] = []
    disabled: list[str] = []  # in tables with enabled = false: never a problem

    def build(values: Mapping[str, Any]) -> GatewayConfig:
        return GatewayConfig(**values)

    read: dict[str, str] = {}  # values read from ${NAME}: never printed in a problem
    token = _unresolved.set((unresolved, disabled, read))
    try:
        with checking_with(checks):
            config, problems, partial = validate_in_one_pass(build, data, format_error_items)
    finally:
        _unresolved.reset(token)
    # A field that failed only because its secret is missing has one problem, not two.
    starts = tuple(f"{x.split(': ', 1)[0]}{c}" for x in unresolved + disabled for c in ":.[")
    problems = [p for p in problems if not p.startswith(starts)]
    if missing_secrets is None:
        problems = unresolved + problems
    else:
        missing_secrets.extend(unresolved)
    if config is None and not problems:
        # Only fields whose secret is missing failed (a disabled publisher's URL, say):
        # the model with disabled stand-ins for those entries is the one to use.
        config = partial
    if problems or config is None:
        problems = [mask_read_values(p, read) for p in problems]
        raise ConfigError(problems or ["the config could not be validated"])
    _register_secret_fields(config)
    assert isinstance(config, GatewayConfig)
    return config


def _register_secret_fields(value: object) -> None:
    """Mask the value of every secret field in log lines, even one written inline."""
    if isinstance(value, SecretStr):
        register_secret(value.get_secret_value())
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _register_secret_fields(getattr(value, name))
    elif isinstance(value, list | tuple):
        for item in value:
            _register_secret_fields(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            _register_secret_fields(item)


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
