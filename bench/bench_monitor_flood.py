"""
An OPTIONS flood at one home, as an operator meets it: real processes (two
homes and a distributor running the monitor, C{twistd sipdist}, sharing a
file store with 1,000 users on each home), SIPp sending 15,000
unauthenticated OPTIONS to home1 at 1,000 per second; home1's transaction
table is bounded to 500 so that it answers 503, the monitor's checks too.
Every 3 s it prints the user counts and the monitor's view (GET /status).

    .venv/bin/python bench/bench_monitor_flood.py [MONITOR-INTERVAL]

(default interval 1 s, threshold 3, check timeout 1 s).  The work files are
left in a temporary directory, the servers' logs included.
"""
import json, os, subprocess, sys, tempfile, time, urllib.request
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.slapd import freePort
import socket

def udpPort():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]; s.close(); return p

work = tempfile.mkdtemp(prefix="sipdist-flood-")
scenario = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sipp",
                        "options_flood.xml")
p1, p2, pd = udpPort(), udpPort(), udpPort()
status = freePort()
path = f"{work}/assignments.conf"
with open(path, "w") as f:
    f.write(f"server home1 sip:127.0.0.1:{p1}\nserver home2 sip:127.0.0.1:{p2}\n")
    for i in range(2000):
        f.write(f"user u{i}@example.com home{1 + i // 1000}\n")
with open(f"{work}/nonce", "w") as f: f.write("flood-measure-secret-0123456789abcdef\n")
common = ["--domain=example.com", f"--store=file:{path}", "--credentials=memory:u0:pw",
          f"--secret-file={work}/nonce"]
interval = sys.argv[1] if len(sys.argv) > 1 else "1"
procs = []
def start(name, args):
    log = open(f"{work}/{name}.log", "w")
    procs.append(subprocess.Popen([sys.executable, "-m", "twisted", "--log-format=text", "sipdist", *common, *args],
                                  stdout=log, stderr=subprocess.STDOUT))
start("home1", ["--role=home", "--name=home1", f"--listen=udp:{p1}:interface=127.0.0.1", "--max-transactions=500"])
start("home2", ["--role=home", "--name=home2", f"--listen=udp:{p2}:interface=127.0.0.1"])
start("distributor", ["--role=distributor", f"--listen=udp:{pd}:interface=127.0.0.1", "--monitor=yes",
                      f"--monitor-interval={interval}", "--monitor-threshold=3", "--monitor-timeout=1",
                      f"--status-listen=tcp:{status}:interface=127.0.0.1"])
def view():
    try:
        data = json.load(urllib.request.urlopen(f"http://127.0.0.1:{status}/status", timeout=2))
    except Exception as e:
        return f"status: {e}"
    mon = data.get("monitor") or data
    return json.dumps(mon)[:400]
def counts():
    tables = {}
    for line in open(path):
        parts = line.split()
        if parts and parts[0] == "user":
            tables[parts[2]] = tables.get(parts[2], 0) + 1
        if parts and parts[0] == "server":
            tables[parts[1] + "-state"] = [x for x in parts if x.startswith("state=")] or ["state=active"]
    return tables
try:
    time.sleep(8)
    print("before:", counts(), view())
    sipp = subprocess.Popen(["sipp", f"127.0.0.1:{p1}", "-sf", scenario, "-t", "u1",
                             "-i", "127.0.0.1", "-p", str(udpPort()), "-r", "1000", "-m", "15000",
                             "-recv_timeout", "2000", "-nostdin", "-trace_stat", "-stf", f"{work}/sipp.csv",
                             "-timeout", "40s"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    t0 = time.monotonic()
    while sipp.poll() is None and time.monotonic() - t0 < 45:
        time.sleep(3)
        print(f"t={time.monotonic()-t0:4.1f}s", counts(), view())
    sipp.wait(timeout=10)
    for _ in range(4):
        time.sleep(3)
        print(f"after t={time.monotonic()-t0:4.1f}s", counts(), view())
finally:
    for p in procs: p.terminate()
    for p in procs: p.wait()
    print("logs in", work)
