#!/usr/bin/env python3
"""A simulated GSM modem on a pseudo-terminal, for the modem sidecar's tests.

It speaks enough of the AT command set (3GPP TS 27.005/27.007, PDU mode) for
the real gammu tool and libgammu to identify it, send through it and read
from it: echo, +CMEE, +CSCS, +CPMS, +CMGF=0, +CMGS with a PDU and a message
reference, +CNMI with +CMTI and +CDS, +CMGR/+CMGL/+CMGD, +CSQ, +COPS, +CGSN,
+CIMI.

    atsim.py --link PATH --control SOCKET --events FILE

PATH becomes a symlink to the pseudo-terminal (the gammurc's device);
SOCKET is a Unix socket taking one command per connection, answering one
line; FILE gets one JSON line per submitted PDU part, decoded, with pdu_at (when
its first byte arrived) and done_at (when its Ctrl-Z did), epoch seconds.

Control commands:
    deliver SENDER TEXT      store an incoming SMS (UCS-2), announce +CMTI
    deliver_parts SENDER N TEXT  the same, as N concatenated parts
    report REF NUMBER TPSTATUS   send a status report (+CDS)
    silence on|off           stop/start answering anything
    silence_after_pdu N      answer nothing once the Nth next PDU arrived
    cms CODE COUNT           answer the next COUNT +CMGS with +CMS ERROR: CODE
    simfull on|off           report the SIM message memory as full
    count                    how many PDU parts were submitted
    stored                   how many messages the SIM holds
    ping                     "pong"
"""

import argparse
import fcntl
import json
import os
import select
import signal
import socket
import termios
import time
import tty

GSM7 = ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
        "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_EXT = {0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\",
            0x3C: "[", 0x3D: "~", 0x3E: "]", 0x40: "|", 0x65: "€"}

STORAGE_SIZE = 30


def semi_octets(digits):
    """Digits as swapped BCD semi-octets, F-padded."""
    if len(digits) % 2:
        digits += "F"
    return "".join(digits[i + 1] + digits[i] for i in range(0, len(digits), 2))


def address(number):
    """A TP address field: length in digits, type, semi-octets."""
    digits = number.lstrip("+")
    toa = 0x91 if number.startswith("+") else 0x81
    return "%02X%02X%s" % (len(digits), toa, semi_octets(digits))


def timestamp(t=None):
    """A TP-SCTS of now (UTC, zone 0)."""
    tm = time.gmtime(t or time.time())
    parts = "%02d%02d%02d%02d%02d%02d" % (tm.tm_year % 100, tm.tm_mon, tm.tm_mday,
                                          tm.tm_hour, tm.tm_min, tm.tm_sec)
    return semi_octets(parts) + "00"


def decode_address(pdu, pos):
    """Reads an address field at pos; returns (number, next pos)."""
    ndigits = int(pdu[pos:pos + 2], 16)
    toa = int(pdu[pos + 2:pos + 4], 16)
    nhex = ndigits + (ndigits % 2)
    raw = pdu[pos + 4:pos + 4 + nhex]
    digits = "".join(raw[i + 1] + raw[i] for i in range(0, len(raw), 2))[:ndigits]
    return ("+" if toa & 0x70 == 0x10 else "") + digits, pos + 4 + nhex


def unpack_septets(data, count, skip_bits):
    """GSM 7-bit packed octets to text, skipping the UDH fill bits."""
    bits = int.from_bytes(data, "little")
    out, esc = [], False
    for i in range(count):
        c = (bits >> (skip_bits + 7 * i)) & 0x7F
        if esc:
            out.append(GSM7_EXT.get(c, "?"))
            esc = False
        elif c == 0x1B:
            esc = True
        else:
            out.append(GSM7[c])
    return "".join(out)


def decode_submit(hexpdu):
    """An SMS-SUBMIT PDU (with its SMSC field) as a dict."""
    pdu = hexpdu.upper()
    sca_len = int(pdu[0:2], 16)
    pos = 2 + sca_len * 2
    first = int(pdu[pos:pos + 2], 16)
    mr = int(pdu[pos + 2:pos + 4], 16)
    number, pos = decode_address(pdu, pos + 4)
    dcs = int(pdu[pos + 2:pos + 4], 16)
    pos += 4
    vpf = (first >> 3) & 3
    pos += {0: 0, 2: 2, 1: 14, 3: 14}[vpf]
    udl = int(pdu[pos:pos + 2], 16)
    ud = bytes.fromhex(pdu[pos + 2:])
    udh, concat = b"", None
    if first & 0x40:
        udhl = ud[0]
        udh = ud[1:1 + udhl]
        i = 0
        while i < len(udh):
            iei, iel = udh[i], udh[i + 1]
            if iei == 0x00:
                concat = {"ref": udh[i + 2], "total": udh[i + 3], "seq": udh[i + 4]}
            elif iei == 0x08:
                concat = {"ref": udh[i + 2] * 256 + udh[i + 3], "total": udh[i + 4],
                          "seq": udh[i + 5]}
            i += 2 + iel
    coding = "ucs2" if dcs & 0x0C == 0x08 else ("8bit" if dcs & 0x0C == 0x04 else "gsm7")
    if coding == "ucs2":
        start = 1 + len(udh) if udh else 0
        text = ud[start:udl].decode("utf-16-be", "replace")
    elif coding == "gsm7":
        header_bits = (1 + len(udh)) * 8 if udh else 0
        skip_septets = (header_bits + 6) // 7
        text = unpack_septets(ud, udl - skip_septets, skip_septets * 7)
    else:
        text = ud.hex()
    return {"number": number, "mr": mr, "dcs": dcs, "coding": coding,
            "srr": bool(first & 0x20), "concat": concat, "text": text,
            "udl": udl}


def deliver_pdu(sender, text, udh=b""):
    """An SMS-DELIVER PDU (with an empty SMSC field) carrying UCS-2 text."""
    ud = text.encode("utf-16-be")
    first = 0x04
    if udh:
        ud = bytes([len(udh)]) + udh + ud
        first |= 0x40
    return "00%02X%s0008%s%02X%s" % (first, address(sender), timestamp(), len(ud), ud.hex().upper())


def status_report_pdu(ref, number, tp_status):
    """An SMS-STATUS-REPORT PDU (with an empty SMSC field)."""
    return "0006%02X%s%s%s%02X" % (ref, address(number), timestamp(), timestamp(), tp_status)


class Modem:
    """The modem's state and its AT command interpreter."""

    def __init__(self, master, events):
        self.master = master
        self.events = events
        self.buf = b""
        self.echo = True
        self.silent = False
        self.silence_after = None
        self.cms_code, self.cms_count = 0, 0
        self.sim_full = False
        self.cops_numeric = True
        self.pdu_len = None     # awaiting a PDU after +CMGS
        self.pdu_at = None      # when its first byte arrived
        self.reference = 0
        self.storage = {}       # index -> (stat, pdu)
        self.submitted = 0

    def write(self, s):
        if not self.silent:
            try:
                os.write(self.master, s.encode() if isinstance(s, str) else s)
            except OSError:
                pass        # nobody listening: a real modem's words are lost too

    def reply(self, *lines, final="OK"):
        for line in lines:
            self.write("\r\n%s\r\n" % line)
        self.write("\r\n%s\r\n" % final)

    def store(self, pdu):
        for idx in range(1, STORAGE_SIZE + 1):
            if idx not in self.storage:
                self.storage[idx] = (0, pdu)
                return idx
        return None

    def used(self):
        return STORAGE_SIZE if self.sim_full else len(self.storage)

    def feed(self, data):
        self.buf += data
        while True:
            if self.pdu_len is not None:
                if self.pdu_at is None and self.buf.strip():
                    self.pdu_at = time.time()
                end = min([i for i in (self.buf.find(b"\x1a"), self.buf.find(b"\x1b")) if i >= 0],
                          default=-1)
                if end < 0:
                    return
                pdu, self.buf = self.buf[:end], self.buf[end + 1:]
                self.pdu_len = None
                self.on_pdu(pdu.decode(errors="replace").strip())
                self.pdu_at = None
                continue
            idx = self.buf.find(b"\r")
            if idx < 0:
                return
            line, self.buf = self.buf[:idx], self.buf[idx + 1:]
            line = line.lstrip(b"\n").decode(errors="replace")
            if self.silent:
                continue
            if self.echo:
                self.write(line + "\r")
            if line.strip():
                self.command(line.strip())

    def on_pdu(self, hexpdu):
        try:
            info = decode_submit(hexpdu)
        except (ValueError, IndexError):
            self.reply(final="+CMS ERROR: 304")
            return
        self.submitted += 1
        info["pdu_at"] = self.pdu_at or time.time()
        info["done_at"] = time.time()
        if self.cms_count > 0:
            self.cms_count -= 1
            info["refused"] = self.cms_code
            self.events.write(json.dumps(info, ensure_ascii=False) + "\n")
            self.events.flush()
            self.reply(final="+CMS ERROR: %d" % self.cms_code)
            return
        self.reference = (self.reference + 1) % 256
        info["reference"] = self.reference
        self.events.write(json.dumps(info, ensure_ascii=False) + "\n")
        self.events.flush()
        if self.silence_after is not None:
            self.silence_after -= 1
            if self.silence_after <= 0:
                self.silence_after = None
                self.silent = True
                return
        self.reply("+CMGS: %d" % self.reference)

    def command(self, cmd):
        up = cmd.upper()
        if not up.startswith("AT"):
            self.reply(final="ERROR")
            return
        body = up[2:]
        if body in ("", "Z") or body.startswith("&F") or body.startswith("+CMEE") \
                or body.startswith("+CNMA") or body.startswith("+CFUN=") or body.startswith("Q0") \
                or body.startswith("V1") or body.startswith("+CREG=") or body.startswith("+CGREG="):
            self.reply()
        elif body.startswith("E"):
            self.echo = body[1:2] != "0"
            self.reply()
        elif body in ("+CGMI", "+GMI"):
            self.reply("SimModem")
        elif body in ("+CGMM", "+GMM"):
            self.reply("SimModem 1")
        elif body in ("+CGMR", "+GMR"):
            self.reply("1.0.0")
        elif body in ("+CGSN", "+GSN"):
            self.reply("356938035643809")
        elif body == "+CIMI":
            self.reply("255011234567890")
        elif body == "+CPIN?":
            self.reply("+CPIN: READY")
        elif body == "+CSQ":
            self.reply("+CSQ: 20,99")
        elif body == "+CREG?":
            self.reply('+CREG: 2,1,"00A1","0B2C"')
        elif body == "+CGREG?":
            self.reply('+CGREG: 2,1,"00A1","0B2C"')
        elif body == "+CGATT?":
            self.reply("+CGATT: 1")
        elif body == "+COPS?":
            self.reply('+COPS: 0,2,"25501"' if self.cops_numeric else '+COPS: 0,0,"SimNet"')
        elif body.startswith("+COPS=3,"):
            self.cops_numeric = body.endswith("2")
            self.reply()
        elif body == "+CSCS=?":
            self.reply('+CSCS: ("GSM","UCS2","IRA")')
        elif body == "+CSCS?":
            self.reply('+CSCS: "GSM"')
        elif body.startswith("+CSCS="):
            self.reply()
        elif body == "+CMGF=?":
            self.reply("+CMGF: (0)")
        elif body == "+CMGF=0":
            self.reply()
        elif body.startswith("+CMGF"):
            self.reply(final="ERROR")
        elif body == "+CSCA?":
            self.reply('+CSCA: "+380670000000",145')
        elif body == "+CPMS=?":
            self.reply('+CPMS: ("SM"),("SM"),("SM")')
        elif body == "+CPMS?":
            n = self.used()
            self.reply('+CPMS: "SM",%d,%d,"SM",%d,%d,"SM",%d,%d' % ((n, STORAGE_SIZE) * 3))
        elif body.startswith("+CPMS="):
            n = self.used()
            self.reply("+CPMS: %d,%d,%d,%d,%d,%d" % ((n, STORAGE_SIZE) * 3))
        elif body == "+CNMI=?":
            self.reply("+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)")
        elif body.startswith("+CNMI"):
            self.reply()
        elif body.startswith("+CSMS"):
            self.reply("+CSMS: 0,1,1,1")
        elif body.startswith("+CMGS="):
            self.pdu_len = int(body[6:])
            self.write("\r\n> ")
        elif body.startswith("+CMGL"):
            lines = []
            for idx in sorted(self.storage):
                stat, pdu = self.storage[idx]
                lines.append("+CMGL: %d,%d,,%d\r\n%s" % (idx, stat, len(pdu) // 2 - 1, pdu))
                self.storage[idx] = (1, pdu)
            self.reply(*lines)
        elif body.startswith("+CMGR="):
            idx = int(body[6:])
            if idx in self.storage:
                stat, pdu = self.storage[idx]
                self.storage[idx] = (1, pdu)
                self.reply("+CMGR: %d,,%d\r\n%s" % (stat, len(pdu) // 2 - 1, pdu))
            else:
                self.reply(final="+CMS ERROR: 321")
        elif body == "+CMGD=?":
            # gammu 1.45 asks which indexes and delete flags there are
            self.reply("+CMGD: (1-%d),(0-4)" % STORAGE_SIZE)
        elif body.startswith("+CMGD="):
            idx = int(body[6:].split(",")[0])
            self.storage.pop(idx, None)
            self.reply()
        else:
            self.reply(final="ERROR")

    def control(self, line):
        words = line.split(" ")
        cmd = words[0]
        if cmd == "ping":
            return "pong"
        if cmd == "count":
            return str(self.submitted)
        if cmd == "stored":
            return str(len(self.storage))
        if cmd == "silence":
            self.silent = words[1] == "on"
            return "ok"
        if cmd == "silence_after_pdu":
            self.silence_after = int(words[1])
            return "ok"
        if cmd == "cms":
            self.cms_code, self.cms_count = int(words[1]), int(words[2])
            return "ok"
        if cmd == "simfull":
            self.sim_full = words[1] == "on"
            return "ok"
        if cmd == "deliver":
            idx = self.store(deliver_pdu(words[1], " ".join(words[2:])))
            if idx is None:
                return "full"
            self.write('\r\n+CMTI: "SM",%d\r\n' % idx)
            return "ok %d" % idx
        if cmd == "deliver_parts":
            text = " ".join(words[3:])
            n = int(words[2])
            size = -(-len(text) // n)
            ref = int(time.time()) % 256
            for seq in range(n):
                udh = bytes([0x00, 0x03, ref, n, seq + 1])
                idx = self.store(deliver_pdu(words[1], text[seq * size:(seq + 1) * size], udh))
                self.write('\r\n+CMTI: "SM",%d\r\n' % idx)
            return "ok"
        if cmd == "report":
            pdu = status_report_pdu(int(words[1]), words[2], int(words[3], 0))
            self.write("\r\n+CDS: %d\r\n%s\r\n" % (len(pdu) // 2 - 1, pdu))
            return "ok"
        return "error unknown command"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--link", required=True)
    ap.add_argument("--control", required=True)
    ap.add_argument("--events", required=True)
    args = ap.parse_args()

    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    if os.path.lexists(args.link):
        os.unlink(args.link)
    os.symlink(os.ttyname(slave), args.link)
    # gammu opens the tty exclusively (TIOCEXCL), which would outlive its
    # close while we hold the slave: we lift it, so that it can reopen
    nxcl = getattr(termios, "TIOCNXCL", 0x540D)
    if os.path.exists(args.control):
        os.unlink(args.control)
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ctl.bind(args.control)
    ctl.listen(4)
    events = open(args.events, "a", encoding="utf-8")
    modem = Modem(master, events)

    running = [True]
    signal.signal(signal.SIGTERM, lambda *a: running.__setitem__(0, False))
    while running[0]:
        try:
            ready, _, _ = select.select([master, ctl], [], [], 0.2)
        except InterruptedError:
            continue
        fcntl.ioctl(slave, nxcl)
        if master in ready:
            try:
                data = os.read(master, 4096)
            except OSError:
                data = b""     # nobody has the tty open
                time.sleep(0.05)
            if data:
                modem.feed(data)
        if ctl in ready:
            conn, _ = ctl.accept()
            with conn:
                conn.settimeout(5)
                line = conn.makefile("r", encoding="utf-8").readline().strip()
                conn.sendall((modem.control(line) + "\n").encode())
    os.unlink(args.link)
    os.unlink(args.control)
    os.close(slave)
    os.close(master)


if __name__ == "__main__":
    main()
