#!/usr/bin/env python3
"""Writes the tracker fuzz target's seeds: the call flows of tests/tracker.rs and
tests/calls.rs in the target's one-byte-per-choice encoding (see
fuzz_targets/tracker.rs). Run from this directory: python3 make.py"""

METHODS = ["INVITE", "INVITE", "ACK", "BYE", "CANCEL", "PRACK", "UPDATE", "REFER",
           "NOTIFY", "INFO", "OPTIONS", "REGISTER"]
STATUSES = [100, 180, 183, 181, 200, 202, 302, 401, 403, 407, 408, 422, 480, 486,
            487, 491, 500, 503, 600, 603]
STEPS = [0, 1, 500, 4_000, 33_000, 95_000, 181_000, 3_600_000]
CALLER, CALLEE, OTHER, NONE = 0, 1, 2, 3  # indexes into TAGS
SE = [1, 90, 120, 1800]
FRAG = [100, 180, 200, 486, 503]


def msg(method="INVITE", status=None, call=0, ft=CALLER, tt=NONE, cseq=1,
        step=1, src=0, dst=1, se=None, reason=False, refer=None, replaces=None,
        frag=None, sdp=False):
    b = [STEPS.index(step), 0, call, ft, tt, cseq - 1, METHODS.index(method)]
    b.append(1 if status is not None else 0)
    if status is not None:
        b.append(STATUSES.index(status))
    b.append(0)  # branch
    extras = ((se is not None) | reason << 1 | (refer is not None) << 2
              | (replaces is not None) << 3 | (frag is not None) << 4 | sdp << 5)
    b += [extras & 0xFF, extras >> 8]
    if se is not None:
        b.append(SE.index(se))
    if refer is not None:  # (call, to tag, from tag, with Replaces)
        b += [refer[0], refer[1], refer[2], 1 if refer[3] else 0]
    if replaces is not None:  # (call, to tag, from tag)
        b += list(replaces)
    if frag is not None:
        b.append(FRAG.index(frag))
    b += [0, src, dst]  # UDP, addresses
    return b


def resp(status, method="INVITE", **kw):
    kw.setdefault("src", 1)
    kw.setdefault("dst", 0)
    return msg(method=method, status=status, **kw)


def answered(call=0, **kw):
    return (msg(call=call, **kw) + resp(100, call=call)
            + resp(180, call=call, tt=CALLEE) + resp(200, call=call, tt=CALLEE)
            + msg("ACK", call=call, tt=CALLEE))


SEEDS = {
    "answered": [0] + answered() + msg("BYE", tt=CALLEE, cseq=2)
    + resp(200, "BYE", tt=CALLEE, cseq=2),
    "busy": [0] + msg() + resp(486, tt=CALLEE) + msg("ACK", tt=CALLEE),
    "cancelled": [0] + msg() + resp(180, tt=CALLEE) + msg("CANCEL")
    + resp(200, "CANCEL") + resp(487, tt=CALLEE),
    "challenge_retry": [0] + msg() + resp(407, tt=OTHER) + msg("ACK", tt=OTHER)
    + msg(cseq=2) + resp(200, tt=CALLEE, cseq=2) + msg("ACK", tt=CALLEE, cseq=2)
    + msg("BYE", ft=CALLEE, tt=CALLER, src=1, dst=0, reason=True),
    "blind_transfer": [0] + answered()
    + msg("REFER", tt=CALLEE, cseq=2, refer=(0, 0, 0, False))
    + resp(202, "REFER", tt=CALLEE, cseq=2)
    + msg("NOTIFY", ft=CALLEE, tt=CALLER, src=1, dst=0, frag=200)
    + msg("BYE", tt=CALLEE, cseq=3),
    "two_legs": [0] + msg(src=0, dst=1) + msg(src=1, dst=2)
    + resp(180, tt=CALLEE, src=2, dst=1) + resp(180, tt=CALLEE, src=1, dst=0)
    + resp(486, tt=OTHER, src=3, dst=1) + resp(200, tt=CALLEE, src=2, dst=1)
    + resp(200, tt=CALLEE, src=1, dst=0) + msg("BYE", tt=CALLEE, cseq=2, src=0, dst=1),
    "session_timer": [0] + msg(se=1800, sdp=True) + resp(200, tt=CALLEE, se=90)
    + msg("ACK", tt=CALLEE) + msg("UPDATE", tt=CALLEE, cseq=2, step=33_000)
    + resp(200, "UPDATE", tt=CALLEE, cseq=2, se=90) + msg("INFO", tt=CALLEE, step=3_600_000),
    "invite_timeout": [0] + msg() + resp(183, tt=CALLEE, sdp=True) + msg("OPTIONS", step=181_000),
    "attended_transfer": [0] + answered(call=0) + answered(call=1)
    + msg(call=2, replaces=(1, CALLEE, CALLER)) + resp(200, call=2, tt=CALLEE)
    + msg("BYE", call=1, tt=CALLEE, cseq=2),
    "small_table": [1] + msg(call=0) + msg(call=1) + msg(call=2) + resp(486, call=0, tt=CALLEE)
    + msg(call=3) + msg(call=0, step=33_000),
}

for name, data in SEEDS.items():
    with open(name, "wb") as f:
        f.write(bytes(data))
