"""Across machines: who binds and advertises what, and the TLS material that protects it.

``addresses`` holds the pure exposure rule (loopback or TLS, unless ``--insecure``);
``certs`` makes the network CA, server and group certificates with ``cryptography`` and
checks which certificate a peer presents; ``tls`` turns them into Flower's and httpx's
settings; ``trust`` is a member's rule for connecting to a group. Its test bench is
:mod:`mycelium.lab`. Nothing here imports torch, flwr or fastapi, nor any other package of
ours.
"""
