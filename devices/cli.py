"""``things-device``: run device agents (simulators now, camera agents later).

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
    )
    print(
        f"things-device simulate: publishing {sim.prefix}/# to {args.host}:{args.port} "
        f"every {args.interval:g}s (camera every {args.camera_interval:g}s); Ctrl-C stops",
        file=sys.stderr,
    )
    sim.run(args.duration or None)
    print(f"things-device simulate: published {sim.published} messages", file=sys.stderr)
    return 0


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    # systemd stops units with SIGTERM; agents treat it like Ctrl-C and shut down cleanly.
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    """The ``things-device`` argument parser with every agent as a subcommand."""
    parser = argparse.ArgumentParser(prog="things-device", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_simulate(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``things-device``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    return handler(args)
