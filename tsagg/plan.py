"""
What one frame means for recording: the L{Plan} that
L{tsagg.rules.StreamRules} makes of it, and the writer carries out.
"""

__all__ = ["Plan"]


class Plan:
    """
    What one frame means for recording.

    @ivar code: The frame's type code.
    @ivar discard: The name of the flow-control frame (C{'alive'}, ...,
        C{'unknown'}) if the frame is not written; else L{None}.
    @ivar end: Why the acquisition ends before this frame, or L{None}.
    @ivar close: Why the open file closes before this frame (the
        acquisition goes on), or L{None}.
    @ivar session: The frame's session id, for a new acquisition's name.
    @ivar wiring: For a Wiring frame: C{'dump'}, C{'diff'} or C{'plain'}
        (no C{dump} key); else L{None}.
    """

    # A plan is made for every frame: what is not set keeps these class
    # defaults, which cost nothing to make.
    discard = None
    end = None
    close = None
    session = None
    wiring = None
    #: Whether the frame is written.
    write = True
    #: Whether the frame is metadata to be written (replayed at the top of
    #: later files once it is on disk).
    metadata = False
    #: Whether the frame is data that only goes on in the open file.
    plain_data = False
    #: A replayed metadata frame identical to the one held: not written.
    duplicate = False
    #: On the first live data frame after a break, of the acquisition that
    #: goes on: how many frames the break cost; else L{None}.
    resumed = None
    _num = None
    _flow = None
    _stream_id = None
    # A START replayed first on a connection, whose session is not known
    # yet; a frame that settles such a START, and whether it ends the
    # acquisition as the START would have.
    _start_pending = False
    _settles_start = False
    _live_start = False
    # Whether the metadata held is forgotten before this frame.
    _forget = False

    def __init__(self, code):
        self.code = code
