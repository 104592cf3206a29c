"""
The OCS agent's command line: its arguments (L{make_parser}, in the "Agent
Options" group that Sphinx's argparse directive documents) and the
recording service they describe (L{service_maker}).  L{tsagg.agent}
imports both; its C{main} is the plugin's entry point.
"""

import argparse

from tsagg import options, wire
from tsagg.clock import MonotonicClock
from tsagg.diskspace import DEFAULT_MIN_FREE
from tsagg.quicklook import channel_name
from tsagg.service import RecordingService, tcp_endpoint_description

__all__ = ["make_parser", "service_maker", "str_to_bool"]

_TRUE = frozenset(["true", "1", "yes", "on"])
_FALSE = frozenset(["false", "0", "no", "off"])


def str_to_bool(value):
    """
    Read a boolean the way people and site config files write it.

    argparse's C{type=bool} takes any non-empty string, C{'False'} included,
    for true; the original agent's C{--auto-start} had that bug.  The SCF
    passes JSON C{true} and C{false} to the agent as the strings C{'True'}
    and C{'False'}.

    @param value: C{True}, C{'True'}, C{'true'}, C{'1'}, C{1}, C{'yes'},
        C{'on'}; or C{False}, C{'False'}, C{'false'}, C{'0'}, C{0}, C{'no'},
        C{'off'}.  Case and surrounding blanks do not matter.
    @rtype: L{bool}
    @raise argparse.ArgumentTypeError: Anything else.
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise argparse.ArgumentTypeError("not a boolean: %r" % (value,))


def _argparse_type(convert):
    """
    One of L{tsagg.options}' converters as an argparse C{type}, whose
    message argparse shows as it is.
    """
    def checked(text):
        try:
            return convert(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e))
    checked.__name__ = convert.__name__
    return checked


_positive_float = _argparse_type(options.positive(float))
_positive_int = _argparse_type(options.positive(int))
_port = _argparse_type(options.port)
_stream_id = _argparse_type(options.stream_id)
_min_free = _argparse_type(options.min_free)
_channel = _argparse_type(channel_name)


def make_parser(parser=None):
    """
    The command line of the agent; its options are the "Agent Options"
    group, which the SCF's C{arguments} list fills in.

    @param parser: An C{argparse.ArgumentParser} to add the group to; a new
        one by default.
    """
    if parser is None:
        parser = argparse.ArgumentParser()
    group = parser.add_argument_group("Agent Options")
    group.add_argument(
        "--auto-start", type=str_to_bool, nargs="?", const=True,
        default=False, metavar="BOOL",
        help="Start the stream Process (recording) as soon as the agent "
             "starts: True/False, true/false or 1/0. Alone, it means True.")
    group.add_argument(
        "--time-per-file", type=_positive_float, default=600.0,
        help="Seconds after which a file is closed and the acquisition goes "
             "on in the next one.")
    group.add_argument(
        "--data-dir", default="/data/",
        help="Directory the files are written under.")
    group.add_argument(
        "--port", type=_port, default=50000,
        help="TCP port of the G3NetworkSender.")
    group.add_argument(
        "--address", default="localhost",
        help="Host of the G3NetworkSender.")
    group.add_argument(
        "--stream-id", type=_stream_id, default="unknown",
        help="Directory name for a stream whose frames carry no "
             "sostream_id.")
    group.add_argument(
        "--gap-timeout", type=_positive_float, default=10.0,
        help="Seconds without a frame after which the current file is "
             "closed and the next data begins a new acquisition.")
    group.add_argument(
        "--idle-timeout", type=_positive_float, default=30.0,
        help="Seconds without a byte from the sender after which the "
             "connection is dropped and made again.")
    group.add_argument(
        "--max-frame-size", type=_positive_int,
        default=wire.DEFAULT_MAX_FRAME_SIZE,
        help="Largest frame accepted, in bytes; a larger one drops the "
             "connection.")
    group.add_argument(
        "--no-fsync", action="store_true",
        help="Do not fsync files when closing them.")
    group.add_argument(
        "--suprsync-db", default=None, metavar="PATH",
        help="socs' suprsync SQLite database: each file closed for good is "
             "registered in it for transfer, with its md5 and its path "
             "relative to the data directory.")
    group.add_argument(
        "--suprsync-archive", default="timestreams", metavar="NAME",
        help="The suprsync archive the files are registered in.")
    group.add_argument(
        "--min-free", type=_min_free, default=options.min_free(DEFAULT_MIN_FREE),
        help="Free space to leave on the data file system: a percentage of "
             "it (1%%) or bytes (500M, 20G). Below it the disk counts as "
             "full: the stream is paused and its frames held until space "
             "returns.")
    group.add_argument(
        "--create-data-dir", type=str_to_bool, nargs="?", const=True,
        default=False, metavar="BOOL",
        help="Make the data directory if it does not exist; by default a "
             "missing one ends the stream Process with an error.")
    group.add_argument(
        "--monitored-channels", type=_channel, nargs="+", default=[],
        metavar="CHANNEL",
        help="Channels of the quick look, whose samples go to the "
             "'detectors' feed: names as in the frames (r0012) or readout "
             "channel numbers (12 is r0012). None by default (no quick "
             "look); the set_monitored_channels Task changes them.")
    group.add_argument(
        "--target-rate", type=_positive_float, default=10.0,
        help="Samples per second per channel of the quick look; the "
             "set_target_rate Task changes it.")
    group.add_argument(
        "--feed-interval", type=_positive_float, default=5.0,
        help="Seconds between records of the 'recorder' status feed.")
    group.add_argument(
        "--degraded-after", type=_positive_float, default=15.0,
        help="Seconds without a connection to the sender after which the "
             "stream Process counts as degraded (session.degraded).")
    return parser


def service_maker(args, reactor, clock=None, watch_frames=None):
    """
    A function that makes the L{RecordingService} the parsed C{args}
    describe, in C{reactor}.

    @param clock: The C{IReactorTime} of the services' timers; a
        L{MonotonicClock} of C{reactor} by default.
    @param watch_frames: The services' C{watch_frames}, e.g. a
        L{QuickLook}.
    """
    if clock is None:
        clock = MonotonicClock(reactor)
    endpoint = tcp_endpoint_description(args.address, args.port)

    def make_service():
        return RecordingService(
            reactor, endpoint, args.data_dir,
            time_per_file=args.time_per_file,
            gap_timeout=args.gap_timeout,
            idle_timeout=args.idle_timeout,
            stream_id=args.stream_id,
            max_frame_size=args.max_frame_size,
            fsync=not args.no_fsync,
            min_free=args.min_free,
            create_data_dir=args.create_data_dir,
            suprsync_db=args.suprsync_db,
            suprsync_archive=args.suprsync_archive,
            clock=clock, watch_frames=watch_frames)
    return make_service
