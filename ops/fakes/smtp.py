"""A fake SMTP server on 127.0.0.1 for tests and local demos: it speaks enough of RFC 5321 for
Python's smtplib (EHLO, AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT) and keeps each message it
is given, parsed, in `messages`. `python -m ops.fakes.smtp --port N` runs it and prints each mail."""

from __future__ import annotations

import argparse
import base64
import email
import socketserver
import threading
from email.message import EmailMessage
from email.policy import default as default_policy


class _Session(socketserver.StreamRequestHandler):
    server: _Server

    def _say(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self._say("220 fake-smtp ready")
        sender, recipients = "", list[str]()
        while True:
            raw = self.rfile.readline(65536)
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb = line.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self._say("250-fake-smtp")
                self._say("250-AUTH PLAIN")
                self._say("250 8BITMIME")
            elif verb == "AUTH":
                parts = line.split()
                given = base64.b64decode(parts[2]).split(b"\0") if len(parts) > 2 else []
                ok = self.server.login is None or [p.decode() for p in given[1:]] == list(self.server.login)
                self._say("235 ok" if ok else "535 bad credentials")
            elif verb == "MAIL":
                sender, recipients = line.split(":", 1)[1].strip().strip("<>"), []
                self._say("250 ok")
            elif verb == "RCPT":
                recipients.append(line.split(":", 1)[1].strip().strip("<>"))
                self._say("250 ok")
            elif verb == "DATA":
                self._say("354 end with <CRLF>.<CRLF>")
                body = []
                while (chunk := self.rfile.readline(1 << 20)) not in (b".\r\n", b".\n", b""):
                    body.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                message = email.message_from_bytes(b"".join(body), policy=default_policy)
                assert isinstance(message, EmailMessage)  # what the default policy makes
                self.server.received(sender, recipients, message)
                self._say("250 queued")
            elif verb in ("RSET", "NOOP"):
                self._say("250 ok")
            elif verb == "QUIT":
                self._say("221 bye")
                return
            else:
                self._say("502 not implemented")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, login: tuple[str, str] | None) -> None:
        super().__init__(("127.0.0.1", port), _Session)
        self.login = login
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.arrived = threading.Condition()

    def received(self, sender: str, recipients: list[str], message: EmailMessage) -> None:
        with self.arrived:
            self.messages.append((sender, recipients, message))
            self.arrived.notify_all()


class FakeSmtp:
    """`with FakeSmtp() as smtp:` — a server on a free port (`smtp.url`) in a thread of this process."""

    def __init__(self, port: int = 0, login: tuple[str, str] | None = None) -> None:
        self.server = _Server(port, login)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="fake-smtp", daemon=True)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def messages(self) -> list[tuple[str, list[str], EmailMessage]]:
        return self.server.messages

    def wait(self, count: int, timeout: float = 5.0) -> list[tuple[str, list[str], EmailMessage]]:
        """The messages once there are `count` of them (or what there is after `timeout`)."""
        with self.server.arrived:
            self.server.arrived.wait_for(lambda: len(self.server.messages) >= count, timeout)
        return list(self.server.messages)

    def __enter__(self) -> FakeSmtp:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=2525)
    port = parser.parse_args().port
    with FakeSmtp(port) as smtp:
        print(f"fake SMTP on {smtp.url}", flush=True)
        seen = 0
        while True:
            for sender, to, message in smtp.wait(seen + 1, timeout=3600)[seen:]:
                print(
                    f"--- from {sender} to {', '.join(to)}: {message['Subject']}\n{message.get_content()}", flush=True
                )
                seen += 1


if __name__ == "__main__":
    main()
