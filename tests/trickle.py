#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
#
# trickle.py PORT ADDRESSES PER_ADDRESS SECONDS [PROBE_PORT]: slow clients
# against a daemon on 127.0.0.1:PORT, for tests/daemon_hostile.sh and
# bench/slow-clients.sh.  Opens PER_ADDRESS connections from each of
# ADDRESSES source addresses (127.0.0.2, 127.0.0.3, ...), each sending a
# request line and then one header line a second, never ending its
# headers; a connection the server closes is opened again (0.2 s later
# when the server refused it at once), so the attack lasts SECONDS.
# Meanwhile it probes GET /healthz, /readyz and /metrics from 127.0.0.1 on
# PROBE_PORT (default: the main port) every 0.25 s with a 2 s timeout,
# and when PROBE_PORT is another port, /healthz on the main port too.
# Prints one line: probes sent, probes that failed, connections opened,
# connections the server closed within 0.5 s (refused at a limit), the
# longest a connection lived (s), the most trickling connections open at
# once, the main port's probes sent and failed, and the probes' latency
# p50 and max (ms).  Failed probes are described on stderr.
import selectors, socket, sys, threading, time, urllib.request

port, naddr, per, seconds = (int(a) for a in sys.argv[1:5])
probe_port = int(sys.argv[5]) if len(sys.argv) > 5 else port
sel = selectors.DefaultSelector()
conns = {}  # socket -> [opened, last_line, source]
stats = {"opened": 0, "refused": 0, "longest": 0.0, "held": 0}

def open_one(src):
    s = socket.socket()
    s.setblocking(False)
    s.bind((src, 0))
    try:
        s.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    conns[s] = [time.time(), 0.0, src]
    sel.register(s, selectors.EVENT_READ)
    stats["opened"] += 1

reopen = []  # (when, source): a refused connection is tried again 0.2 s later

def closed(s):
    opened, _, src = conns.pop(s)
    sel.unregister(s)
    s.close()
    life = time.time() - opened
    if life < 0.5:
        stats["refused"] += 1
    stats["longest"] = max(stats["longest"], life)
    reopen.append((time.time() + (0.2 if life < 0.5 else 0.0), src))

probes = {"sent": 0, "failed": 0, "why": []}
main_probes = {"sent": 0, "failed": 0, "why": []}
latencies = []
def prober(end, at, paths, record):
    while time.time() < end:
        t = time.time()
        path = paths[record["sent"] % len(paths)]
        record["sent"] += 1
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{at}{path}", timeout=2) as r:
                if r.status != 200:
                    raise RuntimeError(f"status {r.status}")
            if record is probes:
                latencies.append(time.time() - t)
        except Exception as e:
            record["failed"] += 1
            record["why"].append(f"{path}: {e}")
        time.sleep(max(0.0, 0.25 - (time.time() - t)))

end = time.time() + seconds
for a in range(naddr):
    for _ in range(per):
        open_one(f"127.0.0.{a + 2}")
time.sleep(0.5)
threading.Thread(target=prober, args=(end, probe_port, ["/healthz", "/readyz", "/metrics"],
                                      probes), daemon=True).start()
if probe_port != port:
    threading.Thread(target=prober, args=(end, port, ["/healthz"], main_probes),
                     daemon=True).start()
while time.time() < end:
    now = time.time()
    for key, _ in sel.select(timeout=0.05):
        s = key.fileobj
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if not data:
            closed(s)
    for when, src in [r for r in reopen if r[0] <= now]:
        reopen.remove((when, src))
        open_one(src)
    held = 0
    for s, state in list(conns.items()):
        if now - state[0] >= 0.5:
            held += 1
        if now - state[1] >= 1.0:
            line = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" if state[1] == 0 else b"X-Slow: 1\r\n"
            try:
                s.send(line)
                state[1] = now
            except BlockingIOError:
                pass
            except OSError:
                closed(s)
    stats["held"] = max(stats["held"], held)
time.sleep(0.3)
for s in list(conns):
    sel.unregister(s)
    s.close()
latencies.sort()
p50 = latencies[len(latencies) // 2] * 1000 if latencies else 0.0
worst = latencies[-1] * 1000 if latencies else 0.0
print(probes["sent"], probes["failed"], stats["opened"], stats["refused"],
      f"{stats['longest']:.1f}", stats["held"], main_probes["sent"], main_probes["failed"],
      f"{p50:.1f}", f"{worst:.1f}")
for why in probes["why"][:5]:
    print("probe failed:", why, file=sys.stderr)
