"""``things-device``: run device agents (simulator, camera) from options or a config file.

Each agent is a subcommand registered by an ``_add_<name>`` function that adds its
parser and sets ``handler``; :func:`main` only parses and dispatches.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType

from gateway import __version__

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]
EX_CONFIG = 78


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, not {text}")
    return value


def _add_broker_options(parser: argparse.ArgumentParser) -> None:
    """Connection options every agent shares."""
    parser.add_argument("--host", default="localhost", help="broker host (default: localhost)")
    parser.add_argument("--port", type=int, default=1883, help="broker port (default: 1883)")
    parser.add_argument("--qos", type=int, choices=(0, 1, 2), default=1, help="QoS (default: 1)")
    parser.add_argument(
        "--protocol",
        type=int,
        choices=(311, 5),
        default=311,
        help="MQTT protocol version (default: 311)",
    )


def _add_simulate(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="publish simulated pool, weather, river and camera readings",
        description="Publish plausible readings to <prefix>/pool/temperature, "
        "<prefix>/weather/SENSOR, <prefix>/river/level and a JPEG to <prefix>/cam/pool.",
    )
    _add_broker_options(parser)
    parser.add_argument("--prefix", default="demo", help="topic prefix (default: demo)")
    parser.add_argument(
        "--interval",
        type=_positive_float,
        default=2.0,
        help="seconds between sensor readings (default: 2)",
    )
    parser.add_argument(
        "--camera-interval",
        type=_positive_float,
        default=5.0,
        help="seconds between camera frames (default: 5)",
    )
    parser.add_argument(
        "--duration",
        type=_non_negative_float,
        default=0.0,
        help="stop after this many seconds; 0 runs until interrupted (default)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for repeatable readings")
    parser.add_argument(
        "--scenario",
        choices=("pool", "plant", "bridge"),
        default="pool",
        help="what to simulate; matches config/examples/<scenario>.toml (default: pool)",
    )
    parser.set_defaults(handler=_run_simulate)


def _run_simulate(args: argparse.Namespace) -> int:
    from devices.simulate import Simulator  # late: `--help` needs no Pillow/paho

    sim = Simulator(
        args.host,
        args.port,
        prefix=args.prefix,
        interval=args.interval,
        camera_interval=args.camera_interval,
        qos=args.qos,
        seed=args.seed,
        protocol=args.protocol,
        scenario=args.scenario,
    )
    print(
        f"things-device simulate ({sim.scenario}): publishing {sim.prefix}/# "
        f"to {args.host}:{args.port} "
        f"every {args.interval:g}s (camera every {args.camera_interval:g}s); Ctrl-C stops",
        file=sys.stderr,
    )
    sim.run(args.duration or None)
    print(f"things-device simulate: published {sim.published} messages", file=sys.stderr)
    return 0


def _add_camera(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "camera",
        help="publish camera frames as retained MQTT messages",
        description="Grab a frame every --interval seconds and whenever a message arrives "
        "on the command topic; publish it retained to --topic; <topic>/status is "
        "online/offline (last will).",
    )
    _add_broker_options(parser)
    parser.add_argument("--topic", required=True, help="topic the frames are published to")
    parser.add_argument(
        "--source",
        required=True,
        choices=("command", "http", "v4l2", "rtsp", "picamera"),
        help="command: stdout of --command; http: GET --url; v4l2: --device via ffmpeg; "
        "rtsp: --url via ffmpeg; picamera: picamera2",
    )
    parser.add_argument("--url", help="snapshot URL (http) or stream URL (rtsp)")
    parser.add_argument("--device", default="/dev/video0", help="V4L2 device (v4l2)")
    parser.add_argument("--command", help="command that prints one JPEG/PNG on stdout")
    parser.add_argument(
        "--interval",
        type=_non_negative_float,
        default=60.0,
        help="seconds between frames; 0 = only on request (default: 60)",
    )
    parser.add_argument(
        "--command-topic", help="a message here takes a frame now (default: <topic>/capture)"
    )
    parser.add_argument(
        "--max-bytes", type=int, default=1_000_000, help="larger frames are re-encoded smaller"
    )
    parser.add_argument(
        "--timeout", type=_positive_float, default=20.0, help="seconds per capture (default 20)"
    )
    parser.add_argument("--client-id", help="MQTT client id (default: random)")
    parser.add_argument("--username", help="broker user name")
    parser.add_argument("--password", help='broker password (in a config file: "${NAME}")')
    parser.add_argument(
        "--duration",
        type=_non_negative_float,
        default=0.0,
        help="stop after this many seconds; 0 runs until stopped (default)",
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    parser.set_defaults(handler=_run_camera)


def _camera_source(args: argparse.Namespace) -> Callable[[], bytes]:
    from devices import sources

    needs = {"command": "command", "http": "url", "rtsp": "url"}
    option = needs.get(args.source)
    if option and not getattr(args, option):
        raise sources.FrameSourceError(f"--source {args.source} needs --{option}")
    if args.source == "command":
        return sources.command_source(args.command, args.timeout)
    if args.source == "http":
        return sources.http_source(args.url, args.timeout)
    if args.source == "v4l2":
        return sources.ffmpeg_source(device=args.device, timeout=args.timeout)
    if args.source == "rtsp":
        return sources.ffmpeg_source(rtsp_url=args.url, timeout=args.timeout)
    return sources.picamera_source()


def _run_camera(args: argparse.Namespace) -> int:
    import logging

    from devices.camera import CameraAgent
    from devices.sources import FrameSourceError
    from gateway.runtime.logs import setup_logging

    setup_logging(args.log_level)
    try:
        source = _camera_source(args)
    except FrameSourceError as exc:
        print(f"things-device camera: {exc}", file=sys.stderr)
        return EX_CONFIG
    agent = CameraAgent(
        source,
        host=args.host,
        port=args.port,
        topic=args.topic,
        interval=args.interval,
        command_topic=args.command_topic,
        max_bytes=args.max_bytes,
        qos=args.qos,
        protocol=args.protocol,
        client_id=args.client_id,
        username=args.username,
        password=args.password,
    )
    agent.run(args.duration or None)
    logging.getLogger("devices.camera").info(
        "stopped: %d frames published, %d failed", agent.published, agent.failures
    )
    return 0


def _add_run(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the agent described by a TOML file (what things-gateway-device@.service does)",
        description='The file names the agent (agent = "camera") and sets its options by '
        'their long names (interval = 30, command_topic = "..."); "${NAME}" values come '
        "from the environment or $CREDENTIALS_DIRECTORY.",
    )
    parser.add_argument("-c", "--config", required=True, metavar="PATH", help="agent config")
    parser.set_defaults(handler=_run_from_file)


def config_argv(data: dict[str, object]) -> list[str]:
    """A config file's table as ``things-device`` arguments: ``agent`` first, then options."""
    from gateway.config import lookup_secret

    agent = data.get("agent")
    if agent not in ("camera", "simulate"):
        raise ValueError('set agent = "camera" or agent = "simulate"')
    argv = [str(agent)]
    for key, value in data.items():
        if key == "agent":
            continue
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if text.startswith("${") and text.endswith("}"):
            secret = lookup_secret(text[2:-1])
            if secret is None:
                raise ValueError(f"{key}: {text} is not set")
            text = secret
        argv += [f"--{key.replace('_', '-')}", text]
    return argv


def _run_from_file(args: argparse.Namespace) -> int:
    import tomllib

    try:
        with open(args.config, "rb") as fh:
            argv = config_argv(tomllib.load(fh))
    except (OSError, tomllib.TOMLDecodeError, ValueError) as exc:
        print(f"things-device: {args.config}: {exc}", file=sys.stderr)
        return EX_CONFIG
    return main(argv)


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    # systemd stops units with SIGTERM; agents treat it like Ctrl-C and shut down cleanly.
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    """The ``things-device`` argument parser with every agent as a subcommand."""
    parser = argparse.ArgumentParser(prog="things-device", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_simulate(subparsers)
    _add_camera(subparsers)
    _add_run(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``things-device``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    return handler(args)
