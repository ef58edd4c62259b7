"""Every error gigsterpg raises on purpose is a GigsterPgError, transient or terminal as a retry would fare."""
import pytest

from gigsterpg.api.jobs import JobInterrupted, JobRefused
from gigsterpg.api.work import ApiError
from gigsterpg.exc import GigsterPgError, Interrupted, TerminalError, TransientError
from gigsterpg.lib.pg.sync.engine.follow import PositionLost


@pytest.mark.parametrize("error, branch", [
    (PositionLost("resume token not found"), TerminalError),  # resuming again cannot work: sync again
    (JobRefused("this server has 8 jobs running or queued", busy=False), TransientError),  # later it may pass
    (JobInterrupted(), Interrupted),
    (ApiError(404, "job_not_found", "no sync job 1", "", "GET /syncs lists the jobs"), GigsterPgError),
])
def test_each_joins_the_family(error, branch):
    assert isinstance(error, branch) and isinstance(error, GigsterPgError)
    assert "\n" not in str(error)


def test_an_interruption_is_still_a_keyboard_interrupt_and_says_what_happened():
    with pytest.raises(KeyboardInterrupt) as caught:
        raise JobInterrupted()
    assert isinstance(caught.value, TerminalError) and str(caught.value) == "interrupted"


def test_position_lost_names_the_reason_and_what_to_do():
    lost = PositionLost("resume token not found")
    assert lost.reason == "resume token not found"
    assert str(lost) == ("the change stream cannot resume from the saved position, resume token not found,"
                         " sync again, then follow from there (the follower does this itself)")
    assert str(ApiError(409, "sync_running", "a sync job is running", "why", "todo")) == "a sync job is running"
