"""
What a UDP send costs the sender when it wakes the process it goes to:
the reason sipdist's UDP port sends the answers of one wake-up together
(sipdist.sip.datagram.DatagramPort.writeSoon).

    python bench/bench_wake.py [--count 20000] [--gaps 0,20,50,200]
                               [--burst 16]

A child process reads datagrams on 127.0.0.1, sleeping in recv when none
waits (as SIPp, or any client, sleeps between a server's answers).  The
parent sends it datagrams of 600 bytes, each after --gaps microseconds of
work of its own (a server handling the next request), and measures the CPU
time of its own thread spent in sendto.  With no gap the child is still
awake reading the last datagram when the next comes; with a gap it has
gone back to sleep, and the send wakes it: on loopback the sender's
kernel does the waking (on a virtual machine, an interrupt to the other
processor or a switch to the child), which costs far more than the send.

The last line sends the same datagrams in bursts of --burst, the work for
the whole burst done first: the child is woken by the first of a burst
and reads the rest as they come.

Prints microseconds of the sender's CPU per sendto.  Nothing else runs:
the figures vary with the machine (a virtual machine's interrupts cost
most), not with sipdist.
"""

import argparse
import os
import socket
import time

SIZE = 600


def busy(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def receiver(sock):
    while True:
        if sock.recv(65536) == b"end":
            os._exit(0)


def measure(sock, target, count, gap, burst=1):
    """
    The sender's CPU seconds per sendto: C{count} datagrams, in bursts of
    C{burst}, C{gap} seconds of work before each datagram (done for the
    whole burst before its first).
    """
    data = b"x" * SIZE
    spent = 0.0
    sent = 0
    while sent < count:
        busy(gap * burst)
        start = time.thread_time()
        for i in range(burst):
            sock.sendto(data, target)
        spent += time.thread_time() - start
        sent += burst
    return spent / sent


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--gaps", default="0,20,50,200",
                        help="microseconds of work before each datagram")
    parser.add_argument("--burst", type=int, default=16)
    args = parser.parse_args()
    gaps = [int(g) / 1e6 for g in args.gaps.split(",")]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    child = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    child.bind(("127.0.0.1", 0))
    # Room for a whole burst and more: no send waits for the reader.
    child.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    target = child.getsockname()
    pid = os.fork()
    if pid == 0:
        sender.close()
        receiver(child)
    child.close()
    try:
        print(f"{args.count:,d} datagrams of {SIZE} bytes to a process "
              f"reading them; the sender's CPU per sendto:")
        for gap in gaps:
            # Fewer datagrams for long gaps: each run stays under ~5 s.
            count = min(args.count, max(1000, int(4.0 / max(gap, 1e-6))))
            cost = measure(sender, target, count, gap)
            print(f"  one at a time, {gap * 1e6:5.0f} us of work before "
                  f"each: {cost * 1e6:6.2f} us")
        gap = max(gaps)
        count = min(args.count, max(1000, int(4.0 / max(gap, 1e-6))))
        cost = measure(sender, target, count, gap, args.burst)
        print(f"  in bursts of {args.burst}, {gap * 1e6:5.0f} us of work "
              f"before each:   {cost * 1e6:6.2f} us")
    finally:
        sender.sendto(b"end", target)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
