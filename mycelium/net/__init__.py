"""Across machines: who binds and advertises what, and the TLS material that protects it.

``addresses`` holds the pure exposure rule (loopback or TLS, unless ``--insecure``);
``certs`` makes the network CA, server and group certificates with ``cryptography`` and
checks which certificate a peer presents. Nothing here imports torch, flwr or fastapi.
"""
