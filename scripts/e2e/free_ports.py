"""Prints N distinct free TCP ports on 127.0.0.1, space-separated (usage: free_ports.py N).
All sockets are held until every port is known, so no port is printed twice; another process
can still take one before the caller binds it, which is why callers retry."""

import socket
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1
socks = []
for _ in range(n):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
