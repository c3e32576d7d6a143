"""Signals in the CLI: an interrupt Python drops inside a finalizer is delivered again."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any


def redeliver_lost_interrupt(unraisable: Any) -> None:
    """Send an interrupt again that Python dropped because it landed in a finalizer.

    A signal's KeyboardInterrupt raised inside a ``__del__`` or weakref callback (torch's
    DataLoader and the import system run many) is printed as "Exception ignored" and lost, and
    the command would carry on. The signal is sent again from a thread a moment after this hook
    has returned (not while the hook is still starting that thread: a loaded machine can keep
    the main thread there past any fixed delay), so it lands once the main thread has left the
    finalizer (and again, should it land in another one).
    """
    err = unraisable.exc_value
    if isinstance(err, KeyboardInterrupt):
        sig = signal.SIGTERM if err.args and err.args[0] == 143 else signal.SIGINT
        hook_done = threading.Event()

        def resend() -> None:
            hook_done.wait()
            time.sleep(0.01)
            os.kill(os.getpid(), sig)

        threading.Thread(target=resend, daemon=True, name="medgan-resend-interrupt").start()
        hook_done.set()
        return
    sys.__unraisablehook__(unraisable)
