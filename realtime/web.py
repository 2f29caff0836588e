"""`seld live --web PORT`: a local page (web.html) with a top-down view of the active
sources and a scrolling timeline of class activity, fed by server-sent events.

Standard library only. The engine thread publishes each frame to every connected
page's own bounded queue and never waits for one: a slow page loses frames, the
engine does not slow down.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import queue
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files

from seld import SeldError

log = logging.getLogger(__name__)

CLIENT_QUEUE = 64  # frames a page may lag behind before it loses some
KEEPALIVE_S = 10.0
HISTORY_FRAMES = 300  # the page's timeline: 30 s of label frames
IDLE_TIMEOUT_S = 60.0  # a connection silent this long (no request yet, or a page not reading) is closed
HOST = "127.0.0.1"  # this machine only: the page shows what its microphones hear


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A page closed mid-reply is no error of ours; nothing is printed over the live view."""
        error = sys.exc_info()[1]
        level = logging.DEBUG if isinstance(error, (ConnectionError, TimeoutError)) else logging.WARNING
        log.log(level, "web: a request from %s failed (%s)", client_address[0], error)


class WebView:
    """The HTTP server and its page; a display of the live loop."""

    def __init__(self, port: int, info: dict):
        # Frame ids are RUN-FRAME: a page that reconnects to a new run on the same port (the old
        # one was stopped) is given all of it, and knows to start its timeline afresh.
        self.run = secrets.token_hex(4)
        self.info = {**info, "run": self.run}
        self.clients: set[queue.Queue] = set()
        self.history: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=HISTORY_FRAMES)  # (frame, message)
        self.clients_lock = threading.Lock()
        self.closing = False
        self.end_message = b""
        self.last_stats: dict = {}
        self.last_idle_sent = 0.0
        self.page = (files("seld.realtime") / "web.html").read_bytes()
        view = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the http.server name)
                path = self.path.split("?", 1)[0]
                if not view._local_host(self.headers.get("Host", "")):
                    # DNS rebinding: a web site whose name now points here must not read the input's path or its events
                    self._send(421, "text/plain", b"this server answers to localhost only\n")
                elif path in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8", view.page)
                elif path == "/info":
                    self._send(200, "application/json", json.dumps(view.info).encode())
                elif path == "/stats":
                    self._send(200, "application/json", json.dumps(view.last_stats).encode())
                elif path == "/events":
                    view._serve_events(self)
                elif path == "/favicon.ico":  # browsers ask; an error in the page's console otherwise
                    self._send(204, "image/x-icon", b"")
                else:
                    self._send(404, "text/plain", b"not found\n")

            do_HEAD = do_GET  # noqa: N815 (_send and _serve_events leave the body out)

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            timeout = IDLE_TIMEOUT_S  # a connection that never sends its request (a preconnect) ends

            def log_message(self, format, *args):  # quiet: the terminal belongs to the live view
                log.debug("web: " + format, *args)

        try:
            self.server = _Server((HOST, port), Handler)
        except OSError as error:
            raise SeldError(f"--web {port}: cannot listen on {HOST}:{port} ({error.strerror})") from None
        self.url = f"http://{HOST}:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="seld-web", daemon=True)
        self.thread.start()

    def _local_host(self, header: str) -> bool:
        """The request's Host names this machine's loopback (or is absent, as in HTTP/1.0)."""
        if not header:
            return True
        name = header if header.endswith("]") else header.rsplit(":", 1)[0]
        return name.strip("[]").lower() in ("127.0.0.1", "localhost", "::1")

    def _serve_events(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-store")
        handler.send_header("Connection", "close")  # a script reading it sees the end of the stream
        handler.end_headers()
        if handler.command == "HEAD":
            return
        mailbox: queue.Queue = queue.Queue(CLIENT_QUEUE)
        # A page that reconnects says the last frame it got (EventSource sends the last `id:`):
        # it gets only the frames of this run after it, not its timeline twice.
        run, _, frame = handler.headers.get("Last-Event-ID", "").partition("-")
        seen = int(frame) if run == self.run and frame.isdecimal() and frame.isascii() else -1
        with self.clients_lock:  # with close(): a page gets the end event however late it comes
            backlog = [message for frame, message in self.history if frame > seen]  # opened mid-run: the timeline so far
            if self.closing:
                backlog.append(self.end_message)
                mailbox.put_nowait(None)
            else:
                self.clients.add(mailbox)
        try:
            handler.wfile.write(b"retry: 1000\n\n" + b"".join(backlog))
            handler.wfile.flush()
            while True:  # to the None that close() queues after the end event
                try:
                    message = mailbox.get(timeout=KEEPALIVE_S)
                except queue.Empty:
                    message = b": keepalive\n\n"
                if message is None:
                    break
                handler.wfile.write(message)
                handler.wfile.flush()
        except (ConnectionError, TimeoutError):
            pass  # the page was closed, or stopped reading
        finally:
            with self.clients_lock:
                self.clients.discard(mailbox)

    def _publish(self, message: bytes, frame: int | None = None) -> None:
        with self.clients_lock:
            if frame is not None:
                self.history.append((frame, message))
            clients = list(self.clients)
        for mailbox in clients:
            try:
                mailbox.put_nowait(message)
            except queue.Full:
                pass  # that page is behind; it misses this frame

    def frame(self, frame: dict, stats: dict) -> None:
        self.last_stats = stats
        self._publish(f"id: {self.run}-{frame['frame']}\nevent: frame\ndata: ".encode()
                      + json.dumps({"frame": frame, "stats": stats}).encode() + b"\n\n", frame=frame["frame"])

    def idle(self, stats: dict) -> None:
        """No frame is coming (the input went silent): the page hears it, once a second at most."""
        self.last_stats = stats
        now = time.monotonic()
        if now - self.last_idle_sent >= 1.0:
            self.last_idle_sent = now
            self._publish(b"event: stats\ndata: " + json.dumps({"stats": stats}).encode() + b"\n\n")

    def close(self, stats: dict) -> None:
        self.last_stats = stats
        with self.clients_lock:
            self.end_message = b"event: end\ndata: " + json.dumps({"stats": stats}).encode() + b"\n\n"
            self.closing = True
            clients = list(self.clients)
        for mailbox in clients:  # never waits on a page that stopped reading: its oldest frames make room
            for message in (self.end_message, None):
                while True:
                    try:
                        mailbox.put_nowait(message)
                        break
                    except queue.Full:
                        with contextlib.suppress(queue.Empty):
                            mailbox.get_nowait()
        self.server.shutdown()
        self.server.server_close()
