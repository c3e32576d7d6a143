"""Signals in the CLI: an interrupt Python drops inside a finalizer is delivered again."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

RESEND_EVERY_S = 0.05
_in_hook = threading.local()


def redeliver_lost_interrupt(unraisable: Any) -> None:
    """Send an interrupt again that Python dropped because it landed in a finalizer.

    A signal's KeyboardInterrupt raised inside a ``__del__`` or weakref callback (torch's
    DataLoader and the import system run many) is printed as "Exception ignored" and lost, and
    the command would carry on. This hook (running in the thread of the finalizer, the main
    thread for signals) puts a one-shot handler in front of the signal's handler, and a thread
    sends the signal every 50 ms until that handler has run outside this hook. So the
    interrupt is raised once the main thread has left the finalizer, however long a loaded
    machine keeps it in the hook, and only once (a second one would cut short the command's
    clean-up, such as the checkpoint `train` writes on Ctrl-C). Should it land in another
    finalizer, this hook runs again.
    """
    err = unraisable.exc_value
    if not isinstance(err, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)
        return
    sig = signal.SIGTERM if err.args and err.args[0] == 143 else signal.SIGINT
    if threading.current_thread() is not threading.main_thread():
        # handlers can only be set from the main thread: one resend, a moment later
        threading.Timer(RESEND_EVERY_S, os.kill, (os.getpid(), sig)).start()
        return
    _in_hook.active = True
    try:
        original = signal.getsignal(sig)
        delivered = threading.Event()

        def once(signum: int, frame: Any) -> None:
            if getattr(_in_hook, "active", False):
                return  # still inside this hook: the thread sends it again
            delivered.set()
            signal.signal(sig, original)
            if callable(original):
                original(signum, frame)
            else:
                raise KeyboardInterrupt(*([143] if sig == signal.SIGTERM else []))

        def resend() -> None:
            while not delivered.is_set():
                os.kill(os.getpid(), sig)
                delivered.wait(RESEND_EVERY_S)

        signal.signal(sig, once)
        threading.Thread(target=resend, daemon=True, name="medgan-resend-interrupt").start()
    finally:
        _in_hook.active = False
