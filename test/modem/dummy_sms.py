#!/usr/bin/env python3
"""Places a received SMS in the inbox of gammu's dummy phone.

    dummy_sms.py --dir DIR --number SENDER --text TEXT [--location N]
                 [--udh HEX] [--date YYYYMMDDTHHMMSSZ]

DIR is the dummy phone's device directory (the gammurc's device); the
message goes to folder 1 (inbox), at location N or the first free one, in
gammu's backup format, written under another name and renamed in so that a
reader never sees half of it. --udh gives a user data header (hex), e.g.
0500030A0201 for part 1 of 2 of concatenated message 0x0A.
"""

import argparse
import os
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--number", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--location", type=int)
    ap.add_argument("--udh")
    ap.add_argument("--date", default=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    args = ap.parse_args()

    inbox = os.path.join(args.dir, "sms", "1")
    os.makedirs(inbox, exist_ok=True)
    location = args.location
    if location is None:
        location = 1
        while os.path.exists(os.path.join(inbox, str(location))):
            location += 1
    lines = ["[SMSBackup000]", "PDU = Deliver", "State = UnRead",
             'Number = "%s"' % args.number, "DateTime = %s" % args.date,
             "Text00 = %s" % args.text.encode("utf-16-be").hex().upper(),
             "Coding = Default_No_Compression", "Folder = 1",
             "Length = %d" % len(args.text), "Class = -1"]
    if args.udh:
        lines.append("UDH = %s" % args.udh)
    tmp = os.path.join(inbox, ".tmp%d" % location)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.rename(tmp, os.path.join(inbox, str(location)))
    print(location)


if __name__ == "__main__":
    main()
