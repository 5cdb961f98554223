"""The labelling page's web app (Flask): one HTML page and a small JSON API over a LabellingSession.

    GET  /                 the page (page.html)
    GET  /api/state        suggestions with top guesses, predicted counts, quality, retrain progress
    GET  /api/map          the PCA map's points (given and predicted labels)
    GET  /api/labels?q=    the given labels (latest first) and skipped utterances whose utt_id contains q
    POST /api/label        {"utt_id", "label"}: appended to the labels CSV before the answer
    POST /api/relabel      {"utt_id", "label"}: change a given label ("" removes it); the CSV rewritten atomically
    POST /api/undo         revert the last label, relabel or skip given on the page
    POST /api/skip         {"utt_id"}: "not sure", kept in the skip list beside the labels, never suggested
    POST /api/unskip       {"utt_id"}: off the skip list again
    POST /api/retrain      retrain now (else: automatically after each batch)
    POST /api/export       write the every-utterance CSV, as `label --out` does
    GET  /audio/<utt_id>   the utterance's audio file, streamed (range requests) from the corpus root; a
                           segment of a recording: only its span, decoded to a WAV (range requests too)
A bad request (unknown label or utterance, a label given twice) answers 400 with {"error": why}.

The page trusts only its own origin: a request whose Host header is not the address served
(127.0.0.1, localhost or --host, with the port) answers 403, so a web page elsewhere cannot reach it
through DNS rebinding; every POST needs the session's token (header X-Label-Token), which the URL the
command prints carries (?token=...) and the page keeps, so another page cannot write through the browser.
"""
from __future__ import annotations

import errno
import hashlib
import hmac
import io
import logging
import os
import secrets
import socket
import sys
from pathlib import Path

from flask import Flask, jsonify, request, send_file
from werkzeug.serving import get_sockaddr, make_server, select_address_family

from data_manifests.errors import UserError
from pipeline.audio import BadAudio, span_wav
from trainer.labelling_page.session import LabellingSession

PAGE = Path(__file__).with_name("page.html")
TOKEN_HEADER = "X-Label-Token"


def page_hosts(host: str, port: int) -> set[str]:
    """The Host header values of this page's own address: loopback by name and number, and `host`."""
    names = {"127.0.0.1", "localhost", "[::1]", f"[{host}]" if ":" in host else host}
    return {f"{n}:{port}" for n in names} | (names if port == 80 else set())


def create_app(session: LabellingSession, token: str, hosts: set[str]) -> Flask:
    """The app for `session`: answers only requests with a Host in `hosts` and writes only with `token`."""
    app = Flask(__name__)
    hosts = {h.lower() for h in hosts}

    @app.before_request
    def own_origin_only():
        if request.host.lower() not in hosts:
            return jsonify({"error": f"Host {request.host!r} is not this page's address "
                                     f"({', '.join(sorted(hosts))}): refused"}), 403
        sent = request.headers.get(TOKEN_HEADER, "").encode()
        if request.method not in ("GET", "HEAD") and not hmac.compare_digest(sent, token.encode()):
            return jsonify({"error": "missing or wrong token: open the page at the address `label --serve` printed "
                                     "(it ends in ?token=...)"}), 403
        return None

    @app.errorhandler(UserError)
    def refused(err):
        return jsonify({"error": str(err)}), 400

    def body(*keys) -> list:
        got = request.get_json(silent=True) or {}
        if not all(isinstance(got.get(k), str) for k in keys):
            raise UserError("send JSON {" + ", ".join(f'"{k}": "..."' for k in keys) + "}")
        return [got[k] for k in keys]

    @app.get("/")
    def page():
        return PAGE.read_text(encoding="utf-8")

    @app.get("/api/state")
    def state():
        return jsonify(session.state())

    @app.get("/api/map")
    def map_points():
        return jsonify(session.map_points())

    @app.get("/api/labels")
    def labels():
        return jsonify(session.labels(request.args.get("q", "")))

    @app.post("/api/label")
    def label():
        return jsonify(session.add_label(*body("utt_id", "label")))

    @app.post("/api/relabel")
    def relabel():
        return jsonify(session.relabel(*body("utt_id", "label")))

    @app.post("/api/undo")
    def undo():
        return jsonify(session.undo())

    @app.post("/api/skip")
    def skip():
        return jsonify(session.skip(*body("utt_id")))

    @app.post("/api/unskip")
    def unskip():
        return jsonify(session.unskip(*body("utt_id")))

    @app.post("/api/retrain")
    def retrain():
        started = session.retrain()
        if not started:
            raise UserError("nothing to train on yet: label utterances of at least 2 classes first")
        return jsonify({"retrain": started})

    @app.post("/api/export")
    def export():
        return jsonify({"wrote": str(session.export())})

    @app.get("/audio/<path:utt_id>")
    def audio(utt_id):
        try:
            path, span = session.audio_path(utt_id), session.span_of(utt_id)
            if span is None:
                return send_file(path, conditional=True)
            wav = span_wav(path, span)
        except UserError as err:
            return jsonify({"error": str(err)}), 404
        except BadAudio as err:
            return jsonify({"error": f"audio of {utt_id} ({path}): {err}"}), 404
        return send_file(io.BytesIO(wav), mimetype="audio/wav", conditional=True, etag=hashlib.sha1(wav).hexdigest(),
                         download_name=f"{Path(path).stem}-{span.start:.3f}-{span.end:.3f}.wav")

    return app


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port and listening; UserError naming the port when it is taken (instead
    of Werkzeug's text and exit 1)."""
    family = select_address_family(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(get_sockaddr(host, port, family))
        sock.listen(128)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is in use by another program: stop it, or pass another "
                            f"--port (e.g. --port {port + 1}; --port 0 takes any free one)") from None
        raise UserError(f"cannot serve on {host}:{port}: {err.strerror or err}") from None
    return sock


def make_page_server(session: LabellingSession, host: str = "127.0.0.1", port: int = 8000, token: str | None = None):
    """Werkzeug's threaded WSGI server for the app (port 0: a free port, `.server_port` says which);
    `.token` is the session's token (random unless given) and `.url` the page's address with it."""
    sock = listening_socket(host, port)
    port = sock.getsockname()[1]
    token = token or secrets.token_urlsafe(16)
    try:
        server = make_server(host, port, create_app(session, token, page_hosts(host, port)), threaded=True,
                             fd=sock.fileno())
    finally:
        sock.close()  # the server holds its own duplicate of the socket
    server.token = token
    server.url = f"http://{f'[{host}]' if ':' in host else host}:{port}/?token={token}"
    return server


def serve(session: LabellingSession, host: str = "127.0.0.1", port: int = 8000, log=print) -> None:
    """Serve the page until Ctrl-C, training a first model in the background unless the saved one was
    trained on the labels in the file (the labels are on disk as they are given: stopping loses nothing)."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per poll of /api/state
    server = make_page_server(session, host, port)
    if session.stale():
        session.retrain()
    log(f"labelling page on {server.url} (labels appended to {session.labels_csv}; Ctrl-C to stop)")
    try:
        server.serve_forever()  # returns on Ctrl-C or SIGTERM (werkzeug's server catches the interrupt)
    finally:
        server.server_close()
    log(f"stopped; {len(session.given)} labels in {session.labels_csv}")
    if session.thread is not None and session.thread.is_alive():
        # A retrain is running inside torch: a normal interpreter exit would abort in its C++ threads.
        # Its model is not needed (every label is on disk already), so leave at once.
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(0)
