"""Real backend servers for the tests: installed from Debian packages, run as child processes.

Each server gets its own free port on loopback and a fresh temporary data folder, so no
state is shared between runs. A server that cannot be installed or started fails the
test with the server's own output; it is never skipped.
"""
