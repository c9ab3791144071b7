"""
Which parts of PyPy's runtime a perf profile of a PyPy process spends its
samples in, when PyPy has no symbols (Debian's libpypy3.9-c.so is
stripped, and its debug symbols are not always to be had).

    python bench/pypy_perf_functions.py PERF_DATA [--top 30]
        [--pypy pypy3] [--no-labels]

PERF_DATA is a ``perf record`` of a PyPy process (``python
bench/profile_register.py --profiler perf`` makes one of a server, run with
PyPy's python and ``--perf-data PATH`` keeps it).  Its samples in libpypy are counted
per function: the function ranges come from the library's unwind table
(``readelf --debug-dump=frames``), which a stripped library keeps.  The
functions have no names, so each is labelled by what it serves: small
loops of one operation each (bytes.split, a dict lookup, a regular
expression, an f-string ...) are run on the same PyPy under perf, and a
function that takes a good part of one of them is named after it; the
interpreter's own functions are those of a loop run with the JIT off.
The first lines give the share of each library (the kernel, libc, JIT-
compiled code).
"""

import argparse
import bisect
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

# One operation each, looped by _LOOP for 2 s; "interpreter" runs with the
# JIT off.
_OPERATIONS = {
    "bytes.split": 'data.split(b"\\r\\n")',
    "bytes.find": 'data.find(b"\\r\\n\\r\\n") + data.find(b"Call-ID")',
    "bytes in": 'b"\\r\\nAuthorization: " in data',
    "bytes slice": 'data[i & 63:100 + (i & 15)]',
    "bytes.partition": 'data.partition(b": ")',
    "bytes +": 'data[:i & 63] + data[:9]',
    "bytes.decode": 'data.decode("ascii")',
    "str.encode": 'text.encode("ascii")',
    "str.lower": 'text.lower()',
    "str %": '"%s:%d" % (text, i)',
    "tuples, lists (allocation, GC)": '[(i, text, [i]) for i in range(20)]',
    "set": 'frozenset((text, i)).issubset(seen)',
    "bytes regex": 'bytesPattern.search(data)',
    "str regex": 'textPattern.findall(text)',
    "f-string": 'f"SIP/2.0 {i} OK\\r\\nVia: {text};received={i}\\r\\n"',
    "str.join": '"\\r\\n".join([text, text, "x%d" % i]).encode()',
    "md5": 'hashlib.md5(data).hexdigest()',
    "hmac-sha256": 'hmac.new(key, data, hashlib.sha256).digest()',
    "dict, bytes keys": 'table.__setitem__(data[:20 + (i & 63)], i)',
    "dict, str keys": 'table.__setitem__(text[:20 + (i & 63)], i)',
    "int()": 'int("12345") + int(b"777") + int("ff", 16)',
    "sendto": 'sender.sendto(data, destination)',
    "recvfrom": 'sender.sendto(data, destination) and receiver.recvfrom(65536)',
    "time.time": 'time.time()',
    "os.urandom": 'os.urandom(8)',
    "interpreter": None,
}

_LOOP = '''
import hashlib, hmac, os, re, socket, time
data = (b"REGISTER sip:example.com SIP/2.0\\r\\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-2\\r\\n"
        b"From: <sip:alice@example.com>;tag=1\\r\\n"
        b"Call-ID: 1-bench@127.0.0.1\\r\\nCSeq: 2 REGISTER\\r\\n\\r\\n")
text = ('username="alice", realm="example.com", nonce="abcdef0123", '
        'uri="sip:example.com", response="0123456789abcdef"')
bytesPattern = re.compile(rb"SIP/2\\.0/UDP ([^;:]+)(?::(\\d+))?;branch=([^;]+)")
textPattern = re.compile(r'([a-z]+)="([^"]*)"')
key = b"k" * 32
table = {}
seen = {text, 1, 2}
receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
receiver.bind(("127.0.0.1", 0))
receiver.setblocking(False)
destination = receiver.getsockname()
sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

def drain():
    try:
        while True:
            receiver.recv(65536)
    except BlockingIOError:
        pass

def interpreted(n):
    counts = {}
    total = 0
    for i in range(n):
        name = "k%d" % (i & 255)
        counts[name] = counts.get(name, 0) + 1
        total += len(name) * 3 + (i, name)[0]
    return total

start = time.time()
while time.time() - start < 2.0:
    for i in range(1000):
        OPERATION
    drain()
    if len(table) > 10000:
        table.clear()
'''

# A function is named after an operation that spends this share of its
# samples in it.
_LABEL_SHARE = 5.0

_LINE = re.compile(r"\s+([\d.]+)%\s+(\S+)\s+\[.\]\s+(\S+)")


def library(pypy):
    """
    The path of the libpypy a PyPy interpreter runs.
    """
    out = subprocess.run(["ldd", shutil.which(pypy) or pypy],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        if "libpypy" in line and "=>" in line:
            return line.split("=>")[1].split("(")[0].strip()
    return None


def functionStarts(path):
    """
    The sorted (start, end) address ranges of the functions of C{path},
    from its unwind table.
    """
    out = subprocess.run(["readelf", "--debug-dump=frames", path],
                         capture_output=True, text=True).stdout
    return sorted((int(a, 16), int(b, 16)) for a, b in
                  re.findall(r"FDE cie=\w+ pc=(\w+)\.\.(\w+)", out))


def samples(data, ranges, libraryName):
    """
    The shares (percent) of a perf record: by library, and by function of
    libpypy (its start address, None for an address in no function).
    """
    report = subprocess.run(
        ["perf", "report", "-i", data, "--stdio", "--no-children",
         "--sort", "dso,sym", "--percent-limit", "0"],
        capture_output=True, text=True).stdout
    starts = [start for start, end in ranges]
    byLibrary = collections.Counter()
    byFunction = collections.Counter()
    for line in report.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        share, dso, symbol = float(match.group(1)), match.group(2), \
            match.group(3)
        if dso.startswith("[JIT]"):
            dso = "[JIT-compiled code]"
        byLibrary[dso] += share
        if dso == libraryName and symbol.startswith("0x"):
            address = int(symbol, 16)
            i = bisect.bisect_right(starts, address) - 1
            inside = i >= 0 and ranges[i][0] <= address < ranges[i][1]
            byFunction[ranges[i][0] if inside else None] += share
    return byLibrary, byFunction


def labels(pypy, ranges, libraryName, work):
    """
    Function start -> the operations that spend a good part of their time
    in it.
    """
    named = collections.defaultdict(list)
    for name, operation in _OPERATIONS.items():
        script = os.path.join(work, "operation.py")
        with open(script, "w") as f:
            f.write(_LOOP.replace(
                "OPERATION", operation or "interpreted(20)"))
        data = os.path.join(work, "operation.data")
        argv = [pypy] + (["--jit", "off"] if operation is None else []) + \
            [script]
        subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F",
                        "1999", "-o", data, "--"] + argv,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, byFunction = samples(data, ranges, libraryName)
        for start, share in byFunction.items():
            if start is not None and share >= _LABEL_SHARE:
                named[start].append(name)
    return named


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="a perf record of a PyPy process")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--pypy", default="pypy3",
                        help="the PyPy that was profiled (its libpypy)")
    parser.add_argument("--no-labels", action="store_true",
                        help="do not run the operations that name the "
                        "functions")
    args = parser.parse_args()
    for tool in ("perf", "readelf", "ldd"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed and not found")
    if not os.path.exists(args.data):
        sys.exit(f"{args.data}: no such perf record")
    path = library(args.pypy)
    if path is None:
        sys.exit(f"{args.pypy}: not a PyPy linked to a libpypy")
    libraryName = os.path.basename(path)
    ranges = functionStarts(path)
    byLibrary, byFunction = samples(args.data, ranges, libraryName)
    if not byLibrary:
        sys.exit(f"{args.data}: no samples perf can report")
    named = {}
    if not args.no_labels:
        work = tempfile.mkdtemp(prefix="sipdist-pypy-perf-")
        try:
            named = labels(args.pypy, ranges, libraryName, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print("share of the samples by library:")
    for name, share in byLibrary.most_common(8):
        print(f"  {share:6.2f}%  {name}")
    print(f"{libraryName} by function ({len(ranges):,d} functions in its "
          f"unwind table), with the operations that spend time in each:")
    for start, share in byFunction.most_common(args.top):
        where = "outside any function" if start is None else hex(start)
        print(f"  {share:6.2f}%  {where:>12s}  "
              f"{', '.join(named.get(start, ()))}")


if __name__ == "__main__":
    main()
