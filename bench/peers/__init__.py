"""Ottava side by side with its peers: daprd, and a bare Python grpc.aio server as the floor.

`make bench-peers` builds daprd (`build-daprd.sh`, cached outside the clone) and runs
`python -m bench.peers.run`, which drives every target with the same Python grpc.aio client
in one run and prints the ratios the issue's "close the gap" targets are stated in.
"""
