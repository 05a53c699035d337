"""Arguments several commands share, and their conversion to library values."""
from __future__ import annotations

import argparse
import contextlib

from ..errors import UserError


class Terminated(KeyboardInterrupt):
    """SIGTERM / SIGHUP, raised as an interrupt so that every ``finally`` (temporary files,
    checkpoints) runs as on Ctrl-C; ``exit_code`` is 128 + the signal's number."""

    def __init__(self, signum: int):
        super().__init__(signum)
        import signal
        self.exit_code = 128 + signum
        self.name = signal.Signals(signum).name


def interrupted(e: KeyboardInterrupt):
    """-> (what happened, in words; the exit code) for Ctrl-C or a :class:`Terminated` signal."""
    name = getattr(e, "name", None)
    return (f"terminated ({name})" if name else "interrupted"), getattr(e, "exit_code", 130)


@contextlib.contextmanager
def signals_as_interrupts():
    """While a command runs (in the main thread): SIGTERM and SIGHUP raise :class:`Terminated`,
    Ctrl-C KeyboardInterrupt as always -- the first of them: once the command is ending, later
    ones are let go.  A terminal's Ctrl-C pressed three times came out of the cleanup (a data
    loader shutting its workers down) as "Exception ignored ..." tracebacks."""
    import os
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    ending, deferred, active = [], [], [True]

    def again(signum):
        if active[0] and not ending and signum in deferred:
            os.kill(os.getpid(), signum)

    def handler(signum, frame):
        if ending:          # the command is already ending, its files being put in order
            return
        f = frame
        while f is not None:    # raised in a __del__ (a progress bar's, a data loader's), it would only be
            if f.f_code.co_name == "__del__":   # printed as "Exception ignored ..." and lost: sent again a
                if signum not in deferred:      # moment later (the __del__ over), raised on leaving at the latest
                    deferred.append(signum)
                t = threading.Timer(0.05, again, (signum,))
                t.daemon = True
                t.start()
                return
            f = f.f_back
        ending.append(signum)
        raise KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)
    # a signal ignored when we start (SIGHUP under nohup, SIGINT in a shell's background job) stays
    # ignored; one whose handler was set outside Python (getsignal: None), or by the program that
    # calls main() (Ctrl-C: not Python's own), is left alone, as it could not be put back
    sigs = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None))
            if s is not None and signal.getsignal(s) not in (signal.SIG_IGN, None)]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        sigs.append(signal.SIGINT)
    old = {s: signal.signal(s, handler) for s in sigs}
    try:
        yield
    finally:
        active[0] = False
        for s, h in old.items():
            signal.signal(s, h)
    if deferred and not ending:
        raise KeyboardInterrupt() if deferred[0] == signal.SIGINT else Terminated(deferred[0])


def printable(msg: str) -> str:
    """``msg`` with its control and format characters escaped (``\\n``, ``\\t``, ``\\x1b``,
    ``\\u202e``, ``\\u200b``, ``\\u2028``, ...): a file named with a line break, a terminal escape
    (set the window title, clear the screen, erase the line above), a bidirectional override or an
    invisible character is shown, not obeyed.  The bytes of a name that is not UTF-8 (Python
    keeps them as lone surrogates) are shown as ``\\xNN``."""
    if msg.isprintable():
        return msg
    import unicodedata
    out = []
    for ch in msg:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif unicodedata.category(ch) in _ESCAPED_CATEGORIES and ch not in _JOINERS:
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Format characters are invisible or reorder the text ("photo\u202egpj.exe" shows as "photoexe.jpg",
# a zero-width space hides in a name); the joiners, which emoji and several scripts are written with, stay
_JOINERS = frozenset("\u200c\u200d")
_ESCAPED_CATEGORIES = ("Cc", "Cf", "Zl", "Zp")   # control, format, line and paragraph separators


class BestEffortStream:
    """A command's stdout / stderr where a failed write -- the reader quit (``| head``, a pager),
    a log on a full disk -- loses that line and every later one, instead of stopping the work
    with a traceback half-way through a batch: the exit code still tells how the run went.  The
    stream's file descriptor is then pointed at ``os.devnull``, so that what the stream buffered
    is not tried again when Python exits."""

    def __init__(self, stream):
        # (a stream closed before we start -- `2>&-` -- is None in sys: lost from the start)
        self._stream, self.lost = stream, stream is None

    def write(self, s):
        if not self.lost:
            try:
                return self._stream.write(s)
            except (OSError, ValueError, AttributeError):
                self._lose()
        return len(s)

    def flush(self):
        if not self.lost:
            try:
                self._stream.flush()
            except (OSError, ValueError, AttributeError):
                self._lose()

    def isatty(self) -> bool:
        try:
            return not self.lost and bool(self._stream.isatty())
        except (OSError, ValueError, AttributeError):
            return False

    def _lose(self) -> None:
        import os
        self.lost = True
        try:
            fd = self._stream.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, fd)
            finally:
                os.close(null)
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name):
        if self._stream is None:
            raise AttributeError(name)
        return getattr(self._stream, name)


@contextlib.contextmanager
def best_effort_output():
    """While a command runs, sys.stdout and sys.stderr are :class:`BestEffortStream` s."""
    import sys
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = BestEffortStream(old[0]), BestEffortStream(old[1])
    try:
        yield
    finally:
        sys.stdout, sys.stderr = old


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for the network (default: torch's, one per core)")


def apply_threads(args) -> None:
    """``--threads``: checked, then given to torch (before any work)."""
    if args.threads is None:
        return
    from ..backends import check_threads
    check_threads(args.threads)
    import torch
    torch.set_num_threads(args.threads)


@contextlib.contextmanager
def large_photos():
    """While a command runs, photos up to :data:`fastreshuffle.io.images.MAX_PIXELS` (16k x 16k)
    are decoded: Pillow's own limit (~89 Mpixel, meant for servers fed untrusted files) refused
    100- and 200-Mpixel camera and phone photos as "decompression bombs".  A process-wide setting,
    so the command's, put back afterwards (the library leaves a program's limit as it is)."""
    from PIL import Image

    from ..io.images import MAX_PIXELS
    old = Image.MAX_IMAGE_PIXELS
    if old is not None and old < MAX_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def add_device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N",
                   help="where to run (default: auto = CUDA if available)")


def device_from_args(args):
    """``--device`` -> torch.device, through the package's one device resolver."""
    from ..backends import resolve_device
    try:
        return resolve_device(args.device)
    except ValueError as e:
        raise UserError(str(e)) from None


def check_output_arg(opt: str, path, overwrite: bool) -> None:
    """Refuse, before any work, an output file named by option ``opt`` that exists (a link too,
    without --overwrite), is a folder, or whose folder cannot be made or written in."""
    from ..errors import OutputExistsError, UserError
    from ..io.safe_write import check_output_file
    try:
        check_output_file(path, overwrite=overwrite)
    except IsADirectoryError:
        raise UserError(f"{opt} {path} is a folder; name a file") from None
    except OutputExistsError:
        raise UserError(f"{opt} {path} exists; use --overwrite to replace it") from None
    except OSError as e:
        raise UserError(f"{opt} {path}: cannot write there: {e.strerror or e}") from None
