#!/usr/bin/env python3
"""A local SMTP server for the tests, on aiosmtpd: every mail it takes is
written whole to DIR as N.eml (N from 1), and DIR/ready says it listens.

    smtp_sink.py PORT DIR
"""

import os
import sys
import threading

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, out):
        self.out = out
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        tmp = os.path.join(self.out, ".%d.tmp" % self.count)
        with open(tmp, "wb") as f:
            f.write(b"X-Envelope-From: %s\r\n" % envelope.mail_from.encode())
            f.write(b"X-Envelope-To: %s\r\n" % ",".join(envelope.rcpt_tos).encode())
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(self.out, "%d.eml" % self.count))
        return "250 OK"


def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    controller = Controller(Sink(out), hostname="127.0.0.1", port=port)
    controller.start()
    open(os.path.join(out, "ready"), "w").close()
    threading.Event().wait()


if __name__ == "__main__":
    main()
